"""CompactTrie and CompactTrieDecoder, checked against a reference: a dict of live identifiers.

Property tests run random builds, removals, additions, compactions and save/load round
trips, and compare every answer (allowed tokens after every prefix, rows, length,
iteration) with the reference and with a trie rebuilt from the final identifier set.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import relevo.decoding.compact_trie as ct
from relevo.decoding import CompactTrie, CompactTrieDecoder, ConstrainedLogitsProcessor
from relevo.engine.errors import ConfigError, CorruptIndexError, IndexFormatError

END = 0  # the end-of-identifier token (and the decoders' EOS)
VOCAB = 8


# -- the reference --------------------------------------------------------------------------------
def ref_allowed(live: dict[tuple[int, ...], int], prefix: tuple[int, ...]) -> list[int]:
    n = len(prefix)
    return sorted({s[n] for s in live if len(s) > n and s[:n] == prefix})


def every_prefix(seqs) -> set[tuple[int, ...]]:
    return {tuple(s[:i]) for s in seqs for i in range(len(s) + 1)}


def assert_matches(trie: CompactTrie, live: dict[tuple[int, ...], int], probe) -> None:
    """``trie`` answers like the reference on every prefix of ``probe`` (plus a miss)."""
    prefixes = sorted(every_prefix(probe) | {(VOCAB + 5,)})
    got = trie.allowed(prefixes)
    for p, a in zip(prefixes, got, strict=True):
        assert a.dtype == np.int32
        assert a.tolist() == ref_allowed(live, p), p
    assert len(trie) == len(live)
    for s in probe:
        assert trie.rows_of(s) == live.get(tuple(s)), s
        assert (list(s) in trie) == (tuple(s) in live)
    assert sorted(trie.sequences(), key=lambda x: x[1]) == sorted(live.items(), key=lambda x: x[1])
    assert [r for _, r in trie.sequences()] == sorted(live.values())  # by row


def identifier_sets(max_n: int = 25):
    return st.lists(
        st.lists(st.integers(1, VOCAB - 1), min_size=1, max_size=5).map(tuple),
        min_size=0,
        max_size=max_n,
        unique=True,
    )


def with_end(seqs, end: bool):
    return [(*s, END) if end else tuple(s) for s in seqs]


# -- build and queries ----------------------------------------------------------------------------
def test_build_allowed_walk_step_and_rows():
    seqs = [[5, 6, END], [5, 7, 8, END], [9, END], [5, 6, 1, END]]
    trie = CompactTrie.build(seqs, rows=[10, 11, 12, 13])
    assert len(trie) == 4 and trie.max_depth == 4
    assert [a.tolist() for a in trie.allowed([[], [5], [5, 6], [4], [5, 7, 8, END]])] == [
        [5, 9],
        [6, 7],
        [END, 1],
        [],
        [],
    ]
    h = trie.walk([5, 6])
    assert h >= 0 and trie.walk([5, 4]) == -1 and trie.walk([]) == trie.root()
    assert trie.step([h, h, -1], [1, 3, 1]).tolist() == [trie.walk([5, 6, 1]), -1, -1]
    assert trie.step_one(h, 1) == trie.walk([5, 6, 1]) and trie.step_one(-1, 1) == -1
    assert trie.rows_of([5, 7, 8, END]) == 11 and trie.rows_of([5, 7]) is None
    assert [9, END] in trie and [9] not in trie and "x" not in trie
    assert np.array([9, END]) in trie
    # the CSR arrays: children of the root are the nodes child_start[0] .. child_end[0] - 1
    lo, hi = int(trie.child_start[0]), int(trie.child_end[0])
    assert trie.child_tokens[lo:hi].tolist() == [5, 9]
    assert trie.live[0] == 4 and trie.live[trie.walk([5])] == 3
    assert trie.terminal_row[trie.walk([9, END])] == 12
    assert trie.nbytes > 0 and trie.bytes_per_id == trie.nbytes / 4
    assert "4 identifiers" in repr(trie)
    with pytest.raises(ValueError):
        trie.child_tokens[1] = 3  # the layout is read-only


def test_identifiers_ending_at_inner_nodes():
    trie = CompactTrie.build([[1, 2], [1], [1, 2, 3]])
    assert [a.tolist() for a in trie.allowed([[], [1], [1, 2], [1, 2, 3]])] == [[1], [2], [3], []]
    assert trie.rows_of([1]) == 1 and trie.rows_of([1, 2]) == 0 and trie.rows_of([1, 2, 3]) == 2
    trie.remove([1])
    assert trie.rows_of([1]) is None and trie.allowed([[1]])[0].tolist() == [2]
    trie.remove([0])
    assert trie.allowed([[1]])[0].tolist() == [2]  # [1, 2, 3] still passes through
    assert list(trie.sequences()) == [((1, 2, 3), 2)]


def test_empty_trie_and_from_padded():
    empty = CompactTrie.build([])
    assert (
        len(empty) == 0 and empty.allowed([[], [1]])[0].size == 0 and list(empty.sequences()) == []
    )
    empty.add([[3, END]], [7])
    assert empty.rows_of([3, END]) == 7
    mat = np.array([[4, 5, END, 9], [4, END, 9, 9], [6, 6, 6, END]])
    a = CompactTrie.from_padded(mat, [3, 2, 4], rows=[1, 2, 3])
    b = CompactTrie.build([[4, 5, END], [4, END], [6, 6, 6, END]], rows=[1, 2, 3])
    assert list(a.sequences()) == list(b.sequences())
    assert np.array_equal(a.child_tokens, b.child_tokens)
    square = CompactTrie.build(np.array([[1, 2], [1, 3]]))
    assert square.allowed([[1]])[0].tolist() == [2, 3]


def test_bad_input_is_refused():
    for seqs, match in (
        ([[1, 2], []], "no tokens"),
        ([[1, -2]], r"\[0, 2\*\*31\)"),
        ([[1, 2**31]], r"\[0, 2\*\*31\)"),
        ([[1.5]], "integers"),
        ([["a"]], "integers"),
    ):
        with pytest.raises(ConfigError, match=match):
            CompactTrie.build(seqs)
    with pytest.raises(ConfigError, match="rows"):
        CompactTrie.build([[1], [2]], rows=[0])
    with pytest.raises(ConfigError, match="rows must be >= 0"):
        CompactTrie.build([[1], [2]], rows=[0, -1])
    with pytest.raises(ConfigError, match="lengths"):
        CompactTrie.from_padded(np.array([[1, 2]]), [3])
    trie = CompactTrie.build([[1, 2]])
    with pytest.raises(ConfigError, match="vocab_size"):
        trie.mask([trie.root()], vocab_size=1)
    with pytest.raises(ConfigError, match="one token per node"):
        trie.step([0, 0], [1])


def test_duplicates_are_refused():
    with pytest.raises(ConfigError, match=r"\[1, 2, 0\] is given to rows 3 and 9"):
        CompactTrie.build([[1, 2, END], [4, END], [1, 2, END]], rows=[3, 4, 9])
    with pytest.raises(ConfigError, match="row 5 is given to identifiers #0 and #1"):
        CompactTrie.build([[1, END], [2, END]], rows=[5, 5])
    trie = CompactTrie.build([[1, END], [2, END]])
    with pytest.raises(ConfigError, match=r"\[1, 0\] is already in the trie"):
        trie.add([[1, END]], [5])
    with pytest.raises(ConfigError, match="row 1 already has a live identifier"):
        trie.add([[3, END]], [1])
    trie.add([[3, END]], [2])
    with pytest.raises(ConfigError, match="identifiers must be distinct"):
        trie.add([[3, END]], [3])  # already in the delta
    with pytest.raises(ConfigError, match="identifiers must be distinct"):
        trie.add([[4, END], [4, END]], [3, 4])  # twice in one batch
    assert len(trie) == 3 and trie.delta_size == 1  # refused adds changed nothing
    trie.remove([0])
    trie.add([[1, END]], [0])  # a removed identifier (and its row) may come back
    assert trie.rows_of([1, END]) == 0


def test_remove_refuses_missing_rows_atomically():
    trie = CompactTrie.build([[1, END], [2, END]], rows=[10, 20])
    with pytest.raises(ConfigError, match=r"1 row\(s\) have no live identifier"):
        trie.remove([10, 30])
    assert len(trie) == 2  # nothing removed
    assert trie.remove([10, 30], missing_ok=True) == 1
    assert trie.remove([10, 10], missing_ok=True) == 0 and len(trie) == 1


# -- updates against the reference ----------------------------------------------------------------
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=identifier_sets(),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("add"), identifier_sets(6)),
            st.tuples(st.just("remove"), st.lists(st.integers(0, 40), max_size=8)),
            st.tuples(st.just("compact"), st.none()),
            st.tuples(st.just("reload"), st.none()),
        ),
        max_size=8,
    ),
    end=st.booleans(),
)
def test_updates_match_a_rebuilt_trie(tmp_path_factory, initial, ops, end):
    initial = with_end(initial, end)
    trie = CompactTrie.build(initial, rows=list(range(len(initial))))
    live = {s: i for i, s in enumerate(initial)}
    seen = set(initial)
    next_row = 100
    for op, arg in ops:
        if op == "add":
            fresh = [s for s in with_end(arg, end) if s not in live]
            rows = list(range(next_row, next_row + len(fresh)))
            next_row += len(fresh)
            trie.add(fresh, rows)
            live.update(zip(fresh, rows, strict=True))
            seen.update(fresh)
        elif op == "remove":
            wanted = set(arg) & set(live.values())
            assert trie.remove(arg, missing_ok=True) == len(wanted)
            live = {s: r for s, r in live.items() if r not in wanted}
        elif op == "compact":
            trie.compact()
            assert trie.delta_size == 0
        else:
            folder = tmp_path_factory.mktemp("trie") / "t"
            trie.save(folder)
            trie = CompactTrie.load(folder)
        assert_matches(trie, live, seen)
    rebuilt = CompactTrie.build(list(live), rows=list(live.values()))
    prefixes = sorted(every_prefix(seen))
    assert [a.tolist() for a in trie.allowed(prefixes)] == [
        a.tolist() for a in rebuilt.allowed(prefixes)
    ]
    assert len(trie) == len(rebuilt) and list(trie.sequences()) == list(rebuilt.sequences())
    for s in seen:
        assert trie.rows_of(s) == rebuilt.rows_of(s)


@settings(max_examples=80, deadline=None)
@given(seqs=identifier_sets(30).filter(len), data=st.data())
def test_a_removed_identifier_is_never_allowed(seqs, data):
    seqs = with_end(seqs, True)
    trie = CompactTrie.build(seqs)
    gone = data.draw(st.sets(st.integers(0, len(seqs) - 1)))
    trie.remove(sorted(gone))
    alive = [s for i, s in enumerate(seqs) if i not in gone]
    for i in gone:
        s = seqs[i]
        assert s not in trie and trie.walk(s) == -1
        for k in range(len(s)):
            allowed = trie.allowed([s[:k]])[0].tolist()
            shared = any(a[: k + 1] == s[: k + 1] for a in alive)
            assert (s[k] in allowed) == shared, (s, k)


@settings(max_examples=60, deadline=None)
@given(seqs=identifier_sets(30), data=st.data())
def test_step_and_mask_agree_with_walk_and_allowed(seqs, data):
    seqs = with_end(seqs, data.draw(st.booleans()))
    trie = CompactTrie.build(seqs)
    trie.remove(sorted(data.draw(st.sets(st.integers(0, max(len(seqs) - 1, 0))))), missing_ok=True)
    if data.draw(st.booleans()):
        trie.add([(7, 7, 7, 7, 7, 7, END)], [999])
    live = dict(trie.sequences())
    prefixes = sorted(every_prefix(seqs))
    handles = np.array([trie.walk(p) for p in prefixes] + [-1], dtype=np.int64)
    tokens = np.array(
        data.draw(st.lists(st.integers(0, VOCAB), min_size=len(handles), max_size=len(handles)))
    )
    stepped = trie.step(handles, tokens)
    for h, t, s, p in zip(handles, tokens, stepped, [*prefixes, None], strict=True):
        assert s == trie.step_one(int(h), int(t))
        if p is not None:
            assert s == trie.walk((*p, int(t)))
            assert (s >= 0) == any(q[: len(p) + 1] == (*p, t) for q in live)
    mask = trie.mask(handles, VOCAB + 1)
    assert mask.shape == (len(handles), VOCAB + 1) and mask.dtype == bool
    for row, allowed in zip(mask, trie.allowed_nodes(handles), strict=True):
        assert np.flatnonzero(row).tolist() == allowed.tolist()


def test_torch_mask_on_a_device():
    torch = pytest.importorskip("torch")
    trie = CompactTrie.build([[1, 2, END], [1, 3, END], [4, END]])
    trie.add([[1, 5, END]], [3])
    handles = [trie.root(), trie.walk([1]), -1]
    mask = trie.mask(handles, 6, device="cpu")
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool
    assert mask.numpy().tolist() == trie.mask(handles, 6).tolist()
    assert np.flatnonzero(mask[1].numpy()).tolist() == [2, 3, 5]


def test_generation_tracks_renumbering():
    trie = CompactTrie.build([[1, END]])
    g = trie.generation
    trie.remove([0])
    assert trie.generation == g  # node handles stay valid
    trie.add([[2, END]], [1])
    trie.compact()
    assert trie.generation == g + 2 and trie.delta_size == 0 and len(trie) == 1


# -- save / load -----------------------------------------------------------------------------------
def saved(tmp_path: Path) -> tuple[CompactTrie, Path]:
    trie = CompactTrie.build([[1, 2, END], [1, 3, END], [4, END]], rows=[5, 6, 7])
    trie.remove([6])
    trie.add([[8, END]], [9])
    return trie, trie.save(tmp_path / "trie")


def rewrite(folder: Path, name: str, arr: np.ndarray) -> None:
    """Replace one array file and fix its checksum, so the structural checks must catch it."""
    np.save(folder / name, arr, allow_pickle=False)
    man = json.loads((folder / ct.MANIFEST).read_text())
    man["files"][name] = {
        "sha256": ct._sha256(folder / name),
        "bytes": (folder / name).stat().st_size,
    }
    (folder / ct.MANIFEST).write_text(json.dumps(man))


def test_save_load_round_trip_keeps_removals_and_delta(tmp_path):
    trie, folder = saved(tmp_path)
    names = sorted(p.name for p in folder.iterdir())
    assert "trie.json" in names and "delta_key.npy" in names and "main_live.npy" in names
    man = json.loads((folder / "trie.json").read_text())
    assert man["format"] == "relevo-compact-trie" and man["format_version"] == 1
    assert man["live_identifiers"] == 3 and man["layers"]["delta"]["live"] == 1
    back = CompactTrie.load(folder)
    assert list(back.sequences()) == list(trie.sequences()) and back.delta_size == 1
    assert back.rows_of([1, 3, END]) is None and back.rows_of([8, END]) == 9
    back.remove([5])  # loaded arrays are writable where updates need it
    with pytest.raises(IndexFormatError, match="already exists"):
        trie.save(folder)
    trie.compact()
    trie.save(folder, overwrite=True)
    assert not (folder / "delta_key.npy").exists() and len(CompactTrie.load(folder)) == 3


def _break(folder: Path, case: str) -> None:
    main = folder / "main_key.npy"
    if case == "no manifest":
        (folder / "trie.json").unlink()
    elif case == "manifest not json":
        (folder / "trie.json").write_text("{")
    elif case == "other format":
        (folder / "trie.json").write_text(json.dumps({"format": "x"}))
    elif case == "newer version":
        man = json.loads((folder / "trie.json").read_text())
        man["format_version"] = 2
        (folder / "trie.json").write_text(json.dumps(man))
    elif case == "missing file":
        main.unlink()
    elif case == "truncated":
        main.write_bytes(main.read_bytes()[:-8])
    elif case == "bit flip":
        raw = bytearray(main.read_bytes())
        raw[-3] ^= 1
        main.write_bytes(bytes(raw))
    elif case == "wrong dtype":
        rewrite(folder, "main_key.npy", np.load(main).astype(np.int32))
    elif case == "offsets out of range":
        ptr = np.load(folder / "main_child_ptr.npy")
        ptr[1] += 50
        rewrite(folder, "main_child_ptr.npy", ptr)
    elif case == "unsorted keys":
        key = np.load(main)
        key[[1, 2]] = key[[2, 1]]
        rewrite(folder, "main_key.npy", key)
    elif case == "live counts":
        live = np.load(folder / "main_live.npy")
        live[-1] += 1
        rewrite(folder, "main_live.npy", live)
    elif case == "rows disagree":
        term = np.load(folder / "main_terminal_row.npy")
        term[term >= 0] += 1
        rewrite(folder, "main_terminal_row.npy", term)
    elif case == "wrong length":
        rewrite(folder, "main_live.npy", np.array([1, 2], dtype=np.int32))
    else:  # pragma: no cover
        raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no manifest", "does not exist"),
        ("manifest not json", "cannot be read as JSON"),
        ("other format", "is not a 'relevo-compact-trie' manifest"),
        ("newer version", "format_version 2"),
        ("missing file", "is missing"),
        ("truncated", "truncated or replaced"),
        ("bit flip", "contents differ from the sha256"),
        ("wrong dtype", "must be a 1-d int64 array, found int32"),
        ("offsets out of range", "child offsets out of range"),
        ("unsorted keys", "not strictly increasing"),
        ("live counts", "live counts do not match"),
        ("rows disagree", "terminal_row and row_keys"),
        ("wrong length", "live has 2 entries"),
    ],
)
def test_corrupt_folders_are_refused(tmp_path, case, message):
    _, folder = saved(tmp_path)
    _break(folder, case)
    with pytest.raises(CorruptIndexError, match=message) as info:
        CompactTrie.load(folder)
    assert "Rebuild" in str(info.value)


def test_object_arrays_are_not_unpickled(tmp_path):
    _, folder = saved(tmp_path)
    path = folder / "main_row_keys.npy"
    np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    man = json.loads((folder / "trie.json").read_text())
    man["files"]["main_row_keys.npy"] = {"sha256": ct._sha256(path), "bytes": path.stat().st_size}
    (folder / "trie.json").write_text(json.dumps(man))
    with pytest.raises(CorruptIndexError, match="not a readable .npy array"):
        CompactTrie.load(folder)


def test_a_failed_save_leaves_nothing_half_written(tmp_path, monkeypatch):
    trie, folder = saved(tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    calls = {"n": 0}
    real = np.save

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(ct.np, "save", flaky)
    trie.remove([5])
    with pytest.raises(OSError, match="disk full"):
        trie.save(folder, overwrite=True)
    calls["n"] = 0
    with pytest.raises(OSError, match="disk full"):
        trie.save(tmp_path / "fresh")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # old trie intact
    assert not (tmp_path / "fresh").exists()
    assert sorted(os.listdir(tmp_path)) == ["trie"]  # no temporary folders left
    assert len(CompactTrie.load(folder)) == 3


# -- the decoder -----------------------------------------------------------------------------------
def toy_lm(rng: np.random.Generator, vocab: int):
    """A random 'language model': logits from a fixed table, hashed on the last two tokens."""
    table = rng.normal(0.0, 3.0, size=(97, vocab))
    return lambda prefix: table[(hash(tuple(prefix[-2:])) % 97)]


def beam_search(dec: CompactTrieDecoder, lm, *, beams: int, vocab: int) -> list[list[int]]:
    """A plain beam search that only expands the decoder's allowed tokens."""
    live = [([], 0.0)]
    done: list[tuple[list[int], float]] = []
    for _ in range(dec.max_tokens()):
        cand = []
        for seq, score in live:
            logits = lm(seq)
            logp = logits - np.logaddexp.reduce(logits)
            allowed = dec.allowed_next(seq)
            assert allowed, seq
            cand += [(seq + [t], score + logp[t]) for t in allowed if t < vocab]
        cand.sort(key=lambda c: -c[1])
        live = []
        for seq, score in cand[:beams]:
            (done if dec.is_finished(seq) else live).append((seq, score))
        if not live:
            break
    return [s for s, _ in done]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seqs=identifier_sets(30).filter(len),
    seed=st.integers(0, 2**16),
    end=st.booleans(),
    data=st.data(),
)
def test_decoder_only_produces_live_identifiers(seqs, seed, end, data):
    seqs = with_end(seqs, end)
    trie = CompactTrie.build(seqs)
    dec = CompactTrieDecoder(trie, eos_token_id=END)
    gone = data.draw(st.sets(st.integers(0, len(seqs) - 1), max_size=len(seqs) - 1))
    trie.remove(sorted(gone))
    if data.draw(st.booleans()):  # longer than any drawn identifier: new ones
        trie.add(with_end([(6, 6, 6, 6, 6, 6), (1, 1, 1, 1, 1, 1, 1)], end), [500, 501])
    live = {s: r for s, r in trie.sequences()}
    lm = toy_lm(np.random.default_rng(seed), VOCAB)
    outs = beam_search(dec, lm, beams=4, vocab=VOCAB)
    assert outs
    for out in outs:
        row = dec.match(out)
        assert row is not None and row not in gone
        ident = tuple(out) if end else tuple(out[:-1])  # without an end token, EOS closes it
        assert live[ident] == row
    # greedy, by sampling the best allowed token
    out: list[int] = []
    while not dec.is_finished(out):
        allowed = dec.allowed_next(out)
        out.append(max(allowed, key=lambda t: lm(out)[t]))
    assert dec.match(out) in live.values()


def test_decoder_eos_inner_terminals_prompt_and_staleness():
    trie = CompactTrie.build([[5, 6], [5, 7, 8], [5]])
    dec = CompactTrieDecoder(trie, eos_token_id=2, prompt_length=3)
    prompt = [9, 9, 9]
    assert dec.allowed_tokens(0, prompt) == [5]
    assert sorted(dec.allowed_tokens(0, [*prompt, 5])) == [2, 6, 7]  # [5] complete: EOS too
    assert dec.allowed_tokens(0, [*prompt, 5, 7, 8, 2, 2]) == [2]  # finished stays finished
    assert dec.allowed_tokens(0, [*prompt, 4]) == [2]  # a broken prefix may only end
    assert dec.match([5, 7, 8, 2, 2]) == 1 and dec.match([5, 7]) is None
    assert dec.max_tokens() == 4
    trie.remove([1])
    assert dec.allowed_tokens(0, [*prompt, 5]) == [6, 2]  # removal seen without a reset
    trie.add([[5, 9]], [3])  # renumbers nodes: memoised states must go
    assert sorted(dec.allowed_tokens(0, [*prompt, 5])) == [2, 6, 9]
    assert dec.allowed_tokens(0, [*prompt, 5, 9]) == [2] and dec.match([5, 9, 2]) == 3
    fn = dec.prefix_allowed_tokens_fn(prompt_length=1)
    assert fn(0, [1, 5, 6]) == [2]


def test_vectorised_beam_over_handles():
    """A decoder loop that keeps node handles (no prefixes): every result is an identifier."""
    rng = np.random.default_rng(3)
    seqs = {tuple(rng.integers(1, 30, rng.integers(2, 7)).tolist()) + (END,) for _ in range(400)}
    trie = CompactTrie.build(sorted(seqs))
    trie.add([(30, 30, END)], [10_000])
    table = rng.normal(size=(32, 31))
    beams = np.full(5, trie.root(), dtype=np.int64)
    paths: list[list[int]] = [[] for _ in beams]
    for _ in range(trie.max_depth):
        allowed = trie.allowed_nodes(beams)
        nxt = []
        for i, a in enumerate(allowed):
            if not len(a):
                nxt.append(END)  # finished: keep (stepping a leaf gives -1)
                continue
            last = paths[i][-1] if paths[i] else 31
            nxt.append(int(a[np.argmax(table[last, a] + rng.gumbel(size=len(a)))]))
        stepped = trie.step(beams, np.array(nxt))
        for i, (h, t) in enumerate(zip(stepped.tolist(), nxt, strict=True)):
            if h >= 0:
                beams[i] = h
                paths[i].append(t)
    for p in paths:
        assert p[-1] == END and tuple(p) in trie and trie.rows_of(p) is not None


@pytest.fixture(scope="module")
def llama():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from relevo.testing import tiny_llama

    return tiny_llama(vocab=48, eos_token_id=END, seed=0)


def test_hugging_face_generate_over_a_compact_trie(llama):
    torch = pytest.importorskip("torch")
    rnd = random.Random(0)
    seqs = {
        tuple(rnd.randrange(1, 48) for _ in range(rnd.randrange(1, 5))) + (END,) for _ in range(300)
    }
    trie = CompactTrie.build(sorted(seqs))
    trie.remove(list(range(0, 300, 2)), missing_ok=True)
    dec = CompactTrieDecoder(trie, eos_token_id=END)
    prompt = torch.tensor([[1, 7, 8, 9, 3]])
    live = dict(trie.sequences())
    for kwargs in (
        {"prefix_allowed_tokens_fn": dec.prefix_allowed_tokens_fn(prompt.shape[1])},
        {
            "logits_processor": [
                ConstrainedLogitsProcessor(dec, prompt_length=prompt.shape[1], num_beams=4)
            ]
        },
    ):
        out = llama.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=dec.max_tokens(),
            num_beams=4,
            num_return_sequences=4,
            do_sample=False,
            eos_token_id=END,
            pad_token_id=END,
            **kwargs,
        )
        for row in out:
            new = row[prompt.shape[1] :].tolist()
            ident = tuple(new[: new.index(END) + 1])
            assert ident in live and dec.match(new) == live[ident]
