"""The ``mlstack`` command line: one Typer app, commands grouped by module."""

from __future__ import annotations

import logging

import typer

from mlstack.cli import bench, cache, jobs, repo, stack, storage

app = typer.Typer(help="mlstack: model repository and serving stack.", no_args_is_help=True)
repo.register(app)
cache.register(app)
stack.register(app)
bench.register(app)
storage.register(app)
jobs.register(app)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
