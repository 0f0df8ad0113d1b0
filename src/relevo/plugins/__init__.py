"""Bundled plugins: ordinary plugin modules using only ``@relevo.hookimpl``.

They are registered first, in this order, so their component names are taken before
any third-party plugin's; each can be blocked by its short name through
``RELEVO_DISABLE_PLUGINS`` (e.g. ``RELEVO_DISABLE_PLUGINS=faiss``).
"""

DEFAULT_PLUGINS: tuple[str, ...] = (
    "relevo.plugins.sentence_transformers",
    "relevo.plugins.onnx",
    "relevo.plugins.bm25",
    "relevo.plugins.splade",
    "relevo.plugins.faiss",
    "relevo.plugins.promptreps",
    "relevo.plugins.cross_encoder",
    "relevo.plugins.llm",
)
