"""``python -m mlstack`` runs the CLI."""

from mlstack.cli import app

app(prog_name="mlstack")
