"""Bundled plugins: ordinary plugin modules using only ``@relevo.hookimpl``.

Each module is self-contained: it imports relevo's rooms (engine core, models,
indexes, decoding, training), never another plugin. The host registers them first,
in the order of :data:`relevo.engine.manager.DEFAULT_PLUGINS`, so their component
names are taken before any third-party plugin's; each can be blocked by its short
name through ``RELEVO_DISABLE_PLUGINS`` (e.g. ``RELEVO_DISABLE_PLUGINS=faiss``).
"""

from ..engine.manager import DEFAULT_PLUGINS

__all__ = ["DEFAULT_PLUGINS"]
