"""relevo-hello-plugin: the smallest third-party relevo plugin.

It registers one pointwise reranker, ``hello-length``, that prefers longer documents.
Installed, it shows up in ``relevo plugins`` and as ``engine.create("reranker", "hello-length")``.
"""

from __future__ import annotations

import relevo


class LengthReranker(relevo.PointwiseReranker):
    """Scores documents by their length in words (a toy, but a real component)."""

    name = "hello-length"

    def score(self, query, docs):
        return [float(len(d.split())) for d in docs]


@relevo.hookimpl
def register_rerankers(register):
    register(LengthReranker)
