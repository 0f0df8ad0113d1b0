"""One flat layer of a :class:`~relevo.decoding.compact_trie.CompactTrie`: build, lookups, checks.

Private: :mod:`relevo.decoding.compact_trie` describes the layout and is the public API.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..engine.errors import ConfigError, CorruptIndexError

FORMAT = "relevo-compact-trie"
FORMAT_VERSION = 1
MANIFEST = "trie.json"

MAX_TOKEN = 2**31 - 1
MAX_NODES = 2**31 - 1  # handles pack two node ids into 32 bits each
LOW = np.int64((1 << 32) - 1)
EMPTY = np.zeros(0, dtype=np.int32)
EMPTY.flags.writeable = False
#: which int32 half of a key holds the token (the low half: first on little-endian machines)
TOKEN_HALF = 0 if np.little_endian else 1
ARRAYS: dict[str, type[np.integer[Any]]] = {
    "child_ptr": np.int64,
    "key": np.int64,
    "live": np.int32,
    "terminal_row": np.int64,
    "row_keys": np.int64,
    "row_nodes": np.int64,
}
CHUNK = 1 << 16  # identifiers reconstructed at a time by sequences()
CACHE_SIZE = 1 << 14  # filtered or merged (main + delta) allowed-token arrays kept


def shown(seq: Sequence[int] | np.ndarray) -> str:
    toks = [int(t) for t in seq]
    return str(toks) if len(toks) <= 16 else str(toks[:16])[:-1] + ", ...]"


# -- input conversion -------------------------------------------------------------------------
def padded(sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix int32 (k, L) padded with -1, lengths int64)`` of token-id sequences.

    Raises:
        ConfigError: an empty sequence, or a token that is not an int in ``[0, 2**31)``.
    """
    if isinstance(sequences, np.ndarray) and sequences.ndim == 2:
        mat = sequences
        if mat.dtype.kind not in "iu":
            raise ConfigError(
                f"identifier tokens must be integers, got an array of {mat.dtype}; "
                "pass tokenizer ids"
            )
        if mat.shape[1] == 0 and mat.shape[0]:
            raise ConfigError("identifiers must have at least one token; got a (k, 0) array")
        check_tokens(mat)
        return mat.astype(np.int32), np.full(mat.shape[0], mat.shape[1], dtype=np.int64)
    k = len(sequences)
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=k)
    if k and int(lengths.min()) == 0:
        i = int(np.argmin(lengths))
        raise ConfigError(
            f"identifier #{i} has no tokens; every document needs a non-empty identifier "
            "(drop texts that tokenize to nothing, or give them an identifier of their own)"
        )
    total = int(lengths.sum())
    width = int(lengths.max()) if k else 0
    mat = np.full((k, width), -1, dtype=np.int32)
    if not total:
        return mat, lengths
    flat = np.array(list(itertools.chain.from_iterable(sequences)))
    if flat.dtype.kind not in "iu" or flat.ndim != 1:
        bad = next(
            (
                t
                for t in itertools.chain.from_iterable(sequences)
                if isinstance(t, bool) or not hasattr(t, "__index__")
            ),
            f"an array of {flat.dtype}",
        )
        raise ConfigError(
            f"identifier tokens must be integers, got {bad!r}; pass tokenizer ids, not strings"
        )
    check_tokens(flat)
    starts = np.cumsum(lengths) - lengths
    rows = np.repeat(np.arange(k), lengths)
    cols = np.arange(total) - np.repeat(starts, lengths)
    mat[rows, cols] = flat
    return mat, lengths


def check_tokens(values: np.ndarray) -> None:
    if values.size and (int(values.min()) < 0 or int(values.max()) > MAX_TOKEN):
        bad = int(values.min()) if int(values.min()) < 0 else int(values.max())
        raise ConfigError(
            f"identifier token ids must be in [0, 2**31), got {bad}; "
            "pass ids from the tokenizer's vocabulary"
        )


def rows_array(rows: Sequence[int] | np.ndarray | None, k: int) -> np.ndarray:
    if rows is None:
        return np.arange(k, dtype=np.int64)
    arr = np.asarray(rows)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ConfigError(
            f"rows must be a flat sequence of integers, got {arr.dtype} of shape {arr.shape}; "
            "pass one document row per identifier"
        )
    if len(arr) != k:
        raise ConfigError(
            f"got {k} identifiers but {len(arr)} rows; pass one row per identifier (same order)"
        )
    out = arr.astype(np.int64)
    if out.size and int(out.min()) < 0:
        raise ConfigError(
            f"rows must be >= 0, got {int(out.min())}; pass document row numbers "
            "(-1 marks 'no identifier' inside the trie)"
        )
    return out


# -- one layer --------------------------------------------------------------------------------
class Layer:
    """One flat trie (main or delta); :mod:`relevo.decoding.compact_trie` describes its arrays."""

    __slots__ = (
        "child_ptr",
        "dirty",
        "filtered",
        "key",
        "live",
        "max_depth",
        "row_keys",
        "row_nodes",
        "terminal_row",
        "token",
    )

    def __init__(self, arrays: dict[str, np.ndarray], max_depth: int) -> None:
        self.child_ptr: np.ndarray = arrays["child_ptr"]
        self.key: np.ndarray = arrays["key"]
        self.live: np.ndarray = arrays["live"]
        self.terminal_row: np.ndarray = arrays["terminal_row"]
        self.row_keys: np.ndarray = arrays["row_keys"]
        self.row_nodes: np.ndarray = arrays["row_nodes"]
        self.max_depth = max_depth
        # the layout never changes after a build: read-only, so slices can be handed out
        for arr in (self.child_ptr, self.key, self.row_keys):
            arr.flags.writeable = False
        #: the low half of each key: a strided int32 view, not a copy
        self.token: np.ndarray = self.key.view(np.int32)[TOKEN_HALF::2]
        #: nodes with a removed (live == 0) child: only their children need filtering
        self.dirty: set[int] = set((self.key[self.live == 0] >> 32).tolist())
        #: live children of dirty nodes, computed once per removal (the root is often dirty)
        self.filtered: dict[int, np.ndarray] = {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAYS}

    @property
    def nodes(self) -> int:
        return len(self.key)

    @property
    def n_live(self) -> int:
        return int(self.live[0])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays().values())

    # -- build ----------------------------------------------------------------------------
    @classmethod
    def build(cls, mat: np.ndarray, lengths: np.ndarray, rows: np.ndarray) -> Layer:
        """The layer of ``k`` identifiers: ``mat`` (k, L) int32 padded with -1.

        Sorts the identifiers lexicographically, then creates the nodes of one depth at
        a time: an identifier opens a node at depth ``d`` when it is at least ``d`` long
        and shares fewer than ``d`` tokens with its predecessor in sorted order.
        Numbering each depth's nodes in sorted order numbers the whole trie
        breadth-first with every node's children contiguous and sorted by token.
        """
        k = len(lengths)
        if k == 0:
            return cls(
                {
                    "child_ptr": np.ones(2, dtype=np.int64),
                    "key": np.full(1, -1, dtype=np.int64),
                    "live": np.zeros(1, dtype=np.int32),
                    "terminal_row": np.full(1, -1, dtype=np.int64),
                    "row_keys": np.zeros(0, dtype=np.int64),
                    "row_nodes": np.zeros(0, dtype=np.int64),
                },
                0,
            )
        row_order = np.argsort(rows, kind="stable")
        sorted_rows = rows[row_order]
        same = np.flatnonzero(sorted_rows[1:] == sorted_rows[:-1])
        if same.size:
            a, b = int(row_order[same[0]]), int(row_order[same[0] + 1])
            raise ConfigError(
                f"row {int(sorted_rows[same[0]])} is given to identifiers #{a} and #{b}; "
                "each document row may have one identifier"
            )
        width = mat.shape[1]
        # lexicographic order; the -1 padding sorts a prefix before its extensions
        order = np.lexsort(mat.T[::-1])
        srt = mat[order]
        slen = lengths[order]
        srows = rows[order]
        differ = srt[1:] != srt[:-1]
        dup = np.flatnonzero(~differ.any(axis=1))
        if dup.size:
            i = int(dup[0])
            raise ConfigError(
                f"identifier {shown(srt[i, : slen[i]])} is given to rows {int(srows[i])} and "
                f"{int(srows[i + 1])}; identifiers must be distinct (append a disambiguating "
                "token, e.g. a counter, to one of them)"
            )
        # length of the prefix each identifier shares with the previous one in sorted order
        lcp = np.zeros(k, dtype=np.int64)
        lcp[1:] = np.argmax(differ, axis=1)
        del differ

        keys: list[np.ndarray] = [np.full(1, -1, dtype=np.int64)]
        lives: list[np.ndarray] = [np.array([k], dtype=np.int32)]
        term_nodes = np.empty(k, dtype=np.int64)
        prev = np.zeros(k, dtype=np.int64)  # each identifier's node at depth d - 1
        base = 1
        for d in range(1, width + 1):
            valid = slen >= d
            opens = valid & (lcp < d)
            count = np.cumsum(opens)
            node = base + count - 1
            m = int(count[-1])
            if m == 0:
                break
            if base + m > MAX_NODES:
                raise ConfigError(
                    f"the trie would have more than {MAX_NODES} nodes; split the identifiers "
                    "into several tries or shorten them"
                )
            keys.append((prev[opens] << 32) | srt[opens, d - 1].astype(np.int64))
            lives.append(np.bincount(node[valid] - base, minlength=m).astype(np.int32))
            ends = slen == d
            term_nodes[ends] = node[ends]
            prev = node
            base += m
        n = base
        key = np.concatenate(keys)
        child_ptr = np.empty(n + 1, dtype=np.int64)
        child_ptr[0] = 1
        np.cumsum(np.bincount(key[1:] >> 32, minlength=n), out=child_ptr[1:])
        child_ptr[1:] += 1
        terminal_row = np.full(n, -1, dtype=np.int64)
        terminal_row[term_nodes] = srows
        inv = np.empty(k, dtype=np.int64)
        inv[order] = np.arange(k)
        return cls(
            {
                "child_ptr": child_ptr,
                "key": key,
                "live": np.concatenate(lives),
                "terminal_row": terminal_row,
                "row_keys": sorted_rows,
                "row_nodes": term_nodes[inv[row_order]],
            },
            int(slen.max()),
        )

    # -- navigation -------------------------------------------------------------------------
    def parent(self, nodes: np.ndarray) -> np.ndarray:
        """Parents of nodes (``-1`` for the root): the high half of their keys."""
        return self.key[nodes] >> 32

    def child(self, node: int, token: int) -> int:
        """The live child of ``node`` on ``token``, or -1 (scalar fast path)."""
        lo = int(self.child_ptr[node])
        hi = int(self.child_ptr[node + 1])
        if lo == hi:
            return -1
        j = lo + int(self.token[lo:hi].searchsorted(token))
        if j < hi and self.token[j] == token and self.live[j] > 0:
            return j
        return -1

    def children(self, nodes: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`child`: one searchsorted over the keys.

        ``tokens`` must lie in ``[0, 2**31]`` (``2**31`` matches nothing); a ``-1`` node
        gives a negative key below every stored one, so ``-1`` in is ``-1`` out.
        """
        key = self.key
        want = (nodes << 32) | tokens
        j = key.searchsorted(want)
        np.minimum(j, len(key) - 1, out=j)
        hit = key[j] == want
        hit &= self.live[j] > 0
        return np.where(hit, j, -1)

    def walk_many(self, mat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The node each padded sequence leads to through live nodes (``-1`` if none)."""
        nodes = np.zeros(len(lengths), dtype=np.int64)
        for d in range(mat.shape[1]):
            todo = np.flatnonzero((lengths > d) & (nodes >= 0))
            if not todo.size:
                break
            nodes[todo] = self.children(nodes[todo], mat[todo, d].astype(np.int64))
        return nodes

    def allowed(self, node: int) -> np.ndarray:
        """Sorted tokens of the live children of ``node`` (read-only int32)."""
        lo = int(self.child_ptr[node])
        hi = int(self.child_ptr[node + 1])
        if node not in self.dirty:
            return self.token[lo:hi]  # read-only view
        return self._filtered(node, lo, hi)

    def _filtered(self, node: int, lo: int, hi: int) -> np.ndarray:
        out = self.filtered.get(node)
        if out is None:
            if len(self.filtered) >= CACHE_SIZE:
                self.filtered.clear()
            out = self.filtered[node] = self.token[lo:hi][self.live[lo:hi] > 0]
            out.flags.writeable = False
        return out

    def allowed_many(self, nodes: list[int]) -> list[np.ndarray]:
        """:meth:`allowed` of many nodes (``-1``: empty)."""
        arr = np.asarray(nodes, dtype=np.int64)
        safe = np.maximum(arr, 0)
        los = self.child_ptr[safe].tolist()
        his = self.child_ptr[safe + 1].tolist()
        tok, dirty = self.token, self.dirty
        out = []
        for n, lo, hi in zip(nodes, los, his, strict=True):
            if n < 0:
                out.append(EMPTY)
            elif n not in dirty:
                out.append(tok[lo:hi])
            else:
                out.append(self._filtered(n, lo, hi))
        return out

    def lookup(self, rows: np.ndarray) -> np.ndarray:
        """Index into ``row_keys`` of each live row, or -1."""
        if not len(self.row_keys):
            return np.full(len(rows), -1, dtype=np.int64)
        idx = np.searchsorted(self.row_keys, rows)
        idx = np.minimum(idx, len(self.row_keys) - 1)
        hit = (self.row_keys[idx] == rows) & (self.row_nodes[idx] >= 0)
        return np.where(hit, idx, -1)

    # -- updates -------------------------------------------------------------------------------
    def remove_at(self, idx: np.ndarray) -> None:
        """Forget the identifiers at ``row_keys[idx]`` (live, distinct)."""
        nodes = self.row_nodes[idx]
        self.row_nodes[idx] = -1
        self.terminal_row[nodes] = -1
        self.filtered.clear()
        cur = nodes
        while cur.size:
            np.subtract.at(self.live, cur, 1)
            cur = cur[cur > 0]
            self.dirty.update(self.parent(cur[self.live[cur] == 0]).tolist())
            cur = self.parent(cur)

    def paths(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token sequences spelled from the root to ``nodes``: ``(matrix padded -1, lengths)``."""
        cols: list[np.ndarray] = []
        cur = np.asarray(nodes, dtype=np.int64)
        lengths = np.zeros(len(cur), dtype=np.int64)
        while True:
            active = cur > 0
            if not active.any():
                break
            cols.append(np.where(active, self.token[cur], -1).astype(np.int32))
            lengths += active
            cur = np.where(active, self.parent(cur), 0)
        if not cols:
            return np.zeros((len(cur), 0), dtype=np.int32), lengths
        rev = np.stack(cols, axis=1)  # deepest token first
        idx = lengths[:, None] - 1 - np.arange(rev.shape[1])[None, :]
        mat = np.take_along_axis(rev, np.maximum(idx, 0), axis=1)
        mat[idx < 0] = -1
        return mat, lengths

    def live_entries(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, nodes)`` of the live identifiers, by row."""
        keep = self.row_nodes >= 0
        return self.row_keys[keep], self.row_nodes[keep]

    # -- files -------------------------------------------------------------------------------------
    @classmethod
    def checked(cls, arrays: dict[str, np.ndarray], expect: dict[str, Any], where: str) -> Layer:
        """A layer from loaded arrays, after checking that they form a valid trie.

        Raises:
            CorruptIndexError: naming the first inconsistency found.
        """

        def bad(what: str) -> CorruptIndexError:
            return CorruptIndexError(
                f"{where}: {what}; the trie folder is damaged or was not written by "
                "CompactTrie.save. Rebuild the trie from its identifiers "
                "(CompactTrie.build(...).save(folder, overwrite=True))."
            )

        for name, dtype in ARRAYS.items():
            arr = arrays[name]
            if arr.dtype != np.dtype(dtype) or arr.ndim != 1:
                raise bad(
                    f"{name} must be a 1-d {np.dtype(dtype)} array, found {arr.dtype} "
                    f"of shape {arr.shape}"
                )
        ptr, key, live = arrays["child_ptr"], arrays["key"], arrays["live"]
        term, keys, rnodes = arrays["terminal_row"], arrays["row_keys"], arrays["row_nodes"]
        n = len(key)
        if n < 1 or n > MAX_NODES:
            raise bad(f"key has {n} entries; a trie has between 1 and {MAX_NODES} nodes")
        if n != expect.get("nodes"):
            raise bad(f"{n} nodes, but {MANIFEST} records {expect.get('nodes')!r}")
        for name, arr, size in (
            ("child_ptr", ptr, n + 1),
            ("live", live, n),
            ("terminal_row", term, n),
            ("row_nodes", rnodes, len(keys)),
        ):
            if len(arr) != size:
                raise bad(f"{name} has {len(arr)} entries, expected {size}")
        if len(keys) != expect.get("identifiers"):
            raise bad(
                f"{len(keys)} identifiers, but {MANIFEST} records {expect.get('identifiers')!r}"
            )
        parent = key[1:] >> 32
        token = key[1:] & LOW
        if key[0] != -1 or bool(np.any(np.diff(key) <= 0)):
            raise bad("keys are not strictly increasing from -1 at the root")
        if n > 1 and (
            int(token.max()) > MAX_TOKEN
            or bool(np.any(parent >= np.arange(1, n)))
            or int(parent[0]) != 0
        ):
            raise bad("a key names a token >= 2**31, or a parent that does not precede its child")
        expected_ptr = np.empty(n + 1, dtype=np.int64)
        expected_ptr[0] = 1
        np.cumsum(np.bincount(parent, minlength=n), out=expected_ptr[1:])
        expected_ptr[1:] += 1
        if not np.array_equal(ptr, expected_ptr):
            raise bad("child_ptr does not match the parents in key (child offsets out of range)")
        if len(keys) > 1 and bool(np.any(np.diff(keys) <= 0)):
            raise bad("row_keys are not strictly increasing")
        if len(rnodes) and (int(rnodes.min()) < -1 or int(rnodes.max()) >= n):
            raise bad("row_nodes point outside the trie")
        alive = rnodes >= 0
        if (
            int(term.min()) < -1
            or bool(np.any(term[rnodes[alive]] != keys[alive]))
            or int(np.count_nonzero(term >= 0)) != int(np.count_nonzero(alive))
        ):
            raise bad("terminal_row and row_keys / row_nodes disagree")
        # live must count the live terminals below each node: recompute it level by level
        expected = (term >= 0).astype(np.int64)
        levels = [(0, 1)]
        while True:
            lo, hi = levels[-1]
            nxt = (int(ptr[lo]), int(ptr[hi]))
            if nxt[0] == nxt[1]:
                break
            levels.append(nxt)
        for lo, hi in reversed(levels[1:]):
            np.add.at(expected, parent[lo - 1 : hi - 1], expected[lo:hi])
        if bool(np.any(expected != live)):
            raise bad("live counts do not match the identifiers stored below each node")
        depth = len(levels) - 1
        if depth != expect.get("max_depth"):
            raise bad(f"depth {depth}, but {MANIFEST} records {expect.get('max_depth')!r}")
        return cls(dict(arrays), depth)  # np.load gives fresh, writable arrays
