"""``python -m relevo`` runs the CLI."""

from .engine.cli import main

main()
