"""The ``mlstack`` command line (``train`` and the serving commands land with their issues)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mlstack.errors import PublishError
from mlstack.repository.card import Dataset, ModelCard
from mlstack.repository.layout import list_versions
from mlstack.repository.publish import Candidate
from mlstack.repository.publish import publish as do_publish
from mlstack.settings import get_settings

app = typer.Typer(help="mlstack: model repository and serving stack.", no_args_is_help=True)
console = Console()


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List models and versions in the repository."""
    rows = []
    for v in list_versions(get_settings().repository):
        c = v.card
        hm = c.headline_metric if c else None
        rows.append({"name": v.name, "version": v.version, "task": c.task if c else None,
                     "metric": hm.name if hm else None, "value": hm.value if hm else None,
                     "parity": c.parity.passed if c and c.parity else None})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("model", "version", "task", "metric", "parity")
    for r in rows:
        metric = f"{r['metric']}={r['value']:.4f}" if r["metric"] else "-"
        table.add_row(r["name"], str(r["version"]), r["task"] or "-", metric, str(r["parity"]))
    console.print(table)


@app.command()
def publish(
    path: Annotated[Path, typer.Argument(help="ONNX file to publish.")],
    name: Annotated[str, typer.Option("--name", help="Model name.")],
    card: Annotated[Path | None, typer.Option("--card", help="Model card JSON.")] = None,
) -> None:
    """Validate an externally trained ONNX model and publish it as the next version (exit 2 if refused)."""
    s = get_settings()
    try:
        data = path.read_bytes()
        mc = (ModelCard.model_validate_json(card.read_text()) if card else
              ModelCard(name=name, task="regression", framework="external", algorithm="unknown",
                        dataset=Dataset(name="unknown", source="external")))
        pub = do_publish(s.repository, Candidate(name=name, onnx_bytes=data, card=mc),
                         max_batch_size=s.default_max_batch_size, instance_count=s.default_instance_count,
                         max_queue_delay_us=s.default_max_queue_delay_us)
    except PublishError as exc:
        console.print(f"[red]refused[/red] ({exc.code}): {exc.message}")
        raise typer.Exit(2) from exc
    except (OSError, ValueError) as exc:
        console.print(f"[red]refused[/red]: {exc}")
        raise typer.Exit(2) from exc
    typer.echo(f"published {pub.name} version {pub.version} at {pub.path}")
