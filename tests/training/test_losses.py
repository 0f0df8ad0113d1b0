"""relevo's in-batch softmax: the judged mask, and the gradient cache equals one pass."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from relevo.training.losses import InBatchSoftmaxLoss, judged_mask  # noqa: E402


class Bag(torch.nn.Module):
    """A tiny embedder with dropout, called like a SentenceTransformer on features."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.EmbeddingBag(50, 8, mode="mean")
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, features):
        return {"sentence_embedding": self.drop(self.emb(features["input_ids"]))}


def features(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, 50, (n, 5), generator=g)}


def test_judged_mask_leaves_out_judged_candidates_but_never_the_own_positive():
    judged = [{"a", "b"}, {"b"}, set()]
    candidates = ["a", "b", "c", "b"]  # positives a, b, c; then one negatives column
    mask, count = judged_mask(judged, candidates, own=[0, 1, 2])
    assert mask[0] == [False, True, False, True]
    assert mask[1] == [False, False, False, True]
    assert mask[2] == [False] * 4
    assert count == 3


def test_mask_removes_a_candidate_from_the_softmax():
    model = Bag().eval()
    loss = InBatchSoftmaxLoss(model, scale=20.0)
    cols = [features(3, 1), features(3, 2), features(3, 3)]
    mask = torch.zeros(3, 6, dtype=torch.bool)
    plain = loss(cols, None).detach()
    assert float(loss(cols, mask).detach()) == pytest.approx(float(plain))
    # Masking a candidate equals the loss over the candidates without it.
    mask[0, 4] = True
    with torch.no_grad():
        embs = [model(c)["sentence_embedding"] for c in cols]
        q = torch.nn.functional.normalize(embs[0], dim=-1)
        d = torch.nn.functional.normalize(torch.cat(embs[1:]), dim=-1)
        s = 20.0 * q @ d.T
        rows = [
            torch.log_softmax(s[i][[c for c in range(6) if not mask[i, c]]], 0) for i in range(3)
        ]
        expected = -(rows[0][0] + rows[1][1] + rows[2][2]) / 3
    assert float(loss(cols, mask).detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(loss(cols, mask).detach()) < float(plain)
    with pytest.raises(ValueError, match="mask shape"):
        loss(cols, torch.zeros(3, 5, dtype=torch.bool))


def test_gradient_cache_gives_the_one_pass_gradient_with_dropout_on():
    """Pass 2 replays pass 1's dropout masks: the gradient is that of one chunked graph."""
    cols = [features(6, 1), features(6, 2), features(6, 3)]
    mask = torch.zeros(6, 12, dtype=torch.bool)
    mask[0, 3] = mask[2, 7] = True

    reference = Bag().train()
    torch.manual_seed(123)
    loss = InBatchSoftmaxLoss(reference, scale=20.0)
    embs = []  # the same chunks in the same order, all in one graph
    for c in cols:
        parts = [
            reference({"input_ids": c["input_ids"][i : i + 2]})["sentence_embedding"]
            for i in range(0, 6, 2)
        ]
        embs.append(torch.cat(parts))
    expected = loss.loss_from_embeddings(embs, mask)
    expected.backward()

    cached = Bag().train()
    torch.manual_seed(123)
    value = InBatchSoftmaxLoss(cached, scale=20.0, mini_batch_size=2)(cols, mask)
    assert not value.requires_grad  # already back-propagated
    assert float(value) == pytest.approx(float(expected), rel=1e-6)
    assert torch.allclose(cached.emb.weight.grad, reference.emb.weight.grad, atol=1e-6)
    # dropout was on: a different draw gives a different gradient
    other = Bag().train()
    torch.manual_seed(7)
    InBatchSoftmaxLoss(other, scale=20.0, mini_batch_size=2)(cols, mask)
    assert not torch.allclose(other.emb.weight.grad, reference.emb.weight.grad, atol=1e-6)


def test_gradient_cache_without_dropout_matches_the_full_batch_exactly():
    cols = [features(6, 1), features(6, 2), features(6, 3)]
    mask = torch.zeros(6, 12, dtype=torch.bool)
    mask[1, 0] = True
    grads, values = [], []
    for mini in (None, 2):
        model = Bag().eval()  # no dropout: chunking cannot change any embedding
        model.zero_grad()
        loss = InBatchSoftmaxLoss(model, scale=20.0, mini_batch_size=mini)
        value = loss(cols, mask)
        if value.requires_grad:
            value.backward()
        grads.append(model.emb.weight.grad.clone())
        values.append(float(value))
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    assert grads[0].abs().sum() > 0
