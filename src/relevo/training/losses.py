"""In-batch softmax losses that know which in-batch candidates are judged relevant.

Multiple-negatives ranking (MNRL) treats every other example's documents in the batch as
negatives of an anchor. On a collection that judges many documents per query (NFCorpus:
43 per training query on average) a batch of 32 random queries gives 28% of the anchors
at least one *judged-relevant* document as an in-batch "negative" — the false-negative
problem the miners solve for mined negatives, coming back through the batch. These
losses take a boolean mask per step (``True``: leave this candidate out of this anchor's
softmax) and drop those logits before the cross-entropy.

:class:`InBatchSoftmaxLoss` computes the loss in one pass; with ``mini_batch_size`` it is
the gradient-cache variant (Gao et al., 2021): embeddings are computed without a graph in
chunks, the loss's gradient with respect to them is taken once, and each chunk is run
again with the same dropout masks to push that gradient into the weights — memory bounded
by the chunk, the result that of the full batch.

:class:`InBatchDistillLoss` is the listwise distillation counterpart: instead of a
one-hot target over the batch's documents it takes a teacher's score for every (anchor,
in-batch document) cell and minimises the KL divergence between the teacher's softmax
and the student's, so a judged-relevant in-batch document the teacher scores highly is a
soft positive rather than a negative, and every document of the batch carries a graded
signal instead of the one or two hard negatives MarginMSE sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _rng_states(torch: Any) -> tuple[Any, list[Any]]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), cuda


def _set_rng_states(torch: Any, states: tuple[Any, list[Any]]) -> None:
    cpu, cuda = states
    torch.set_rng_state(cpu)
    if cuda:
        torch.cuda.set_rng_state_all(cuda)


class InBatchSoftmaxLoss:
    """MNRL over (anchor, positive, negatives...) columns with an optional exclusion mask.

    Args:
        model: the ``SentenceTransformer`` under training.
        scale: inverse temperature applied to the cosine scores.
        mini_batch_size: ``None`` for one pass; else the gradient-cache chunk size.

    Calling it with the tokenised columns and a ``(batch, batch × (columns − 1))`` mask
    returns the loss. In the cached mode the gradient is already in the parameters when it
    returns and the loss carries no graph (``requires_grad`` is ``False``): do not call
    ``backward`` on it.
    """

    def __init__(self, model: Any, *, scale: float, mini_batch_size: int | None = None) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.scale = float(scale)
        self.mini_batch_size = mini_batch_size

    # -- the loss on embeddings ---------------------------------------------------------------
    def scores(self, embeddings: Sequence[Any]) -> Any:
        """``scale`` x cosine of every anchor with every document: ``(n, n * (columns - 1))``."""
        normalize = self.torch.nn.functional.normalize
        anchors = normalize(embeddings[0], dim=-1)
        docs = normalize(self.torch.cat(list(embeddings[1:]), dim=0), dim=-1)
        return self.scale * anchors @ docs.T

    def loss_from_embeddings(self, embeddings: Sequence[Any], mask: Any | None) -> Any:
        torch = self.torch
        scores = self.scores(embeddings)
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        target = torch.arange(scores.shape[0], device=scores.device)
        return torch.nn.functional.cross_entropy(scores, target)

    def _embed(self, features: dict[str, Any]) -> Any:
        return self.model(features)["sentence_embedding"]

    # -- one step ---------------------------------------------------------------------------
    @staticmethod
    def _check_shape(features: Sequence[dict[str, Any]], name: str, cells: Any | None) -> None:
        """Refuse a per-(anchor, document) tensor that does not fit the batch's columns."""
        shape = (
            features[0]["input_ids"].shape[0],
            sum(f["input_ids"].shape[0] for f in features[1:]),
        )
        if cells is not None and tuple(cells.shape) != shape:
            raise ValueError(f"{name} shape {tuple(cells.shape)} does not fit the batch {shape}")

    def __call__(self, features: Sequence[dict[str, Any]], mask: Any | None = None) -> Any:
        self._check_shape(features, "mask", mask)
        if self.mini_batch_size is None:
            return self.loss_from_embeddings([self._embed(f) for f in features], mask)
        return self._cached(features, mask)

    def _chunks(self, features: dict[str, Any]) -> list[dict[str, Any]]:
        n = int(features["input_ids"].shape[0])
        size = int(self.mini_batch_size or n)
        return [
            {k: (v[i : i + size] if hasattr(v, "shape") else v) for k, v in features.items()}
            for i in range(0, n, size)
        ]

    def _cached(self, features: Sequence[dict[str, Any]], mask: Any | None) -> Any:
        torch = self.torch
        chunks = [self._chunks(f) for f in features]
        states: list[list[tuple[Any, list[Any]]]] = []
        reps: list[Any] = []
        with torch.no_grad():  # pass 1: embeddings only, remembering each chunk's RNG
            for column in chunks:
                column_states, parts = [], []
                for chunk in column:
                    column_states.append(_rng_states(torch))
                    parts.append(self._embed(chunk).detach())
                states.append(column_states)
                reps.append(torch.cat(parts, dim=0))
        leaves = [r.requires_grad_() for r in reps]
        loss = self.loss_from_embeddings(leaves, mask)
        loss.backward()  # gradients of the loss with respect to every embedding
        after = _rng_states(torch)
        for column, column_states, leaf in zip(chunks, states, leaves, strict=True):
            start = 0
            for chunk, state in zip(column, column_states, strict=True):
                _set_rng_states(torch, state)  # the same dropout masks as in pass 1
                emb = self._embed(chunk)
                grad = leaf.grad[start : start + emb.shape[0]]
                start += emb.shape[0]
                emb.backward(grad)  # chain rule through this chunk's graph only
        _set_rng_states(torch, after)
        return loss.detach()


class InBatchDistillLoss(InBatchSoftmaxLoss):
    """KL(target || student softmax) over every document of the batch.

    Args:
        model: the ``SentenceTransformer`` under training.
        scale: the student's inverse temperature on its cosine scores.
        teacher_scale: the teacher's inverse temperature on its scores.
        label_weight: share of the target given to the judgements: the target is
            ``(1 - w) x softmax(teacher_scale x teacher) + w x`` uniform over the
            documents judged relevant to the anchor.

    Called with the tokenised columns, a ``(batch, batch × (columns − 1))`` tensor of
    teacher scores in loss column order (every positive, then each negatives column) and,
    with ``label_weight``, a tensor of the same shape holding 1 where a document is judged
    relevant to the anchor (every row needs one: the anchor's own positive).
    """

    def __init__(
        self, model: Any, *, scale: float, teacher_scale: float, label_weight: float = 0.0
    ) -> None:
        super().__init__(model, scale=scale)
        self.teacher_scale = float(teacher_scale)
        self.label_weight = float(label_weight)

    def target(self, teacher: Any, judged: Any | None = None) -> Any:
        """The distribution the student's softmax is pulled to, one row per anchor."""
        torch = self.torch
        probs = torch.softmax(self.teacher_scale * teacher.to(torch.float32), dim=1)
        if not self.label_weight:
            return probs
        if judged is None:
            raise ValueError("label_weight needs the judged-relevant cells of the batch")
        counts = judged.sum(dim=1, keepdim=True)
        if bool((counts <= 0).any()):
            raise ValueError("every anchor needs a judged-relevant document in the batch")
        return (1 - self.label_weight) * probs + self.label_weight * judged / counts

    def loss_from_embeddings(
        self, embeddings: Sequence[Any], mask: Any | None, judged: Any | None = None
    ) -> Any:
        if mask is None:
            raise ValueError("InBatchDistillLoss needs the teacher's scores for the batch")
        torch = self.torch
        student = torch.log_softmax(self.scores(embeddings), dim=1)
        target = self.target(mask, judged).to(student.dtype)
        return torch.nn.functional.kl_div(student, target, reduction="batchmean")

    def __call__(
        self, features: Sequence[dict[str, Any]], mask: Any | None = None, judged: Any = None
    ) -> Any:
        self._check_shape(features, "teacher scores", mask)
        self._check_shape(features, "judged cells", judged)
        return self.loss_from_embeddings([self._embed(f) for f in features], mask, judged)


def judged_mask(
    judged: Sequence[set[Any]], candidates: Sequence[Any], *, own: Sequence[int]
) -> tuple[list[list[bool]], int]:
    """Which candidates each anchor must not see as negatives.

    Args:
        judged: per anchor, the references of its judged-relevant documents.
        candidates: the references of the batch's documents, in loss column order.
        own: per anchor, the candidate index of its own positive (never masked).

    Returns:
        the mask rows and how many ``True`` cells it holds.
    """
    rows, count = [], 0
    for i, refs in enumerate(judged):
        row = [c != own[i] and ref in refs for c, ref in enumerate(candidates)]
        count += sum(row)
        rows.append(row)
    return rows, count


__all__ = ["InBatchDistillLoss", "InBatchSoftmaxLoss", "judged_mask"]
