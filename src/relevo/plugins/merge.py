"""Bundled plugin: ``relevo merge``, weight averaging of sentence-transformers embedders.

The work is :func:`relevo.training.merge.merge_embedders`; this module only adds the
command. Importing it imports neither torch nor safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..engine.hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    import click

    from ..engine.commands import CommandHelpers


def _merge_command() -> click.Command:
    import click

    @click.command("merge")
    @click.argument("sources", nargs=-1, required=True, metavar="SOURCE SOURCE [SOURCE ...]")
    @click.option(
        "--out",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder for the merged model.",
    )
    @click.option(
        "--weight",
        "weights",
        multiple=True,
        type=click.FloatRange(min=0),
        help="Weight of each SOURCE, once per SOURCE in order (normalised to sum 1). [default: equal]",
    )
    @click.option("--overwrite", is_flag=True, help="Replace an existing model folder at --out.")
    def merge(
        sources: tuple[str, ...], out: Path, weights: tuple[float, ...], overwrite: bool
    ) -> None:
        """Merge sentence-transformers embedders by (weighted) averaging of their weights.

        SOURCE is a sentence-transformers folder (e.g. one written by `relevo train
        embedder`) or minilm; give two or more with the same architecture, such as
        fine-tunes of one base on different datasets:
        `relevo merge A B --weight 0.7 --weight 0.3 --out DIR`. The result loads as
        `--embedder sentence-transformers:DIR`; DIR/relevo-merge.json records the
        sources, their weight digests and the weights.
        """
        from ..training.merge import merge_embedders

        result = merge_embedders(sources, out, weights=weights or None, overwrite=overwrite)
        shown = ", ".join(f"{w:.3g}" for w in result.weights)
        click.echo(
            f"merged {len(result.sources)} models (weights {shown}) into {result.path}, "
            f"use as --embedder sentence-transformers:{result.path}"
        )

    return merge


@hookimpl
def register_commands(cli: click.Group, helpers: CommandHelpers) -> None:
    cli.add_command(_merge_command())


__all__: list[str] = []
