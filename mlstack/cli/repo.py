"""Repository commands: ``train``, ``models``, ``publish``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlstack.cli.tables import markdown_models
from mlstack.errors import MlstackError, PublishError
from mlstack.repository import intake
from mlstack.repository.layout import list_versions, model_names
from mlstack.repository.publish import Candidate, SandboxLimits
from mlstack.repository.publish import publish as do_publish
from mlstack.repository.remote import RepositorySyncFailed, open_repository
from mlstack.settings import get_settings

console = Console(width=None if sys.stdout.isatty() else 160)


def models(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
           as_markdown: Annotated[bool, typer.Option("--markdown", help="The README's Markdown table.")] = False) -> None:
    """List models and versions in the repository: task, headline metric, parity."""
    rows = []
    for v in list_versions(open_repository(get_settings())):
        c = v.card
        hm = c.headline_metric if c else None
        rows.append({"name": v.name, "version": v.version, "task": c.task if c else None,
                     "metric": hm.name if hm else None, "value": hm.value if hm else None,
                     "threshold": hm.threshold if hm else None, "metric_passed": hm.passed if hm else None,
                     "parity": c.parity.passed if c and c.parity else None,
                     "framework": c.framework if c else None, "created_at": c.created_at if c else None,
                     "algorithm": c.algorithm if c else None,
                     "parity_tolerance": c.parity.tolerance if c and c.parity else None})
    if as_markdown:
        typer.echo(markdown_models(rows))
        return
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("model", "version", "task", "metric", "threshold", "parity")
    for r in rows:
        metric = f"{r['metric']}={r['value']:.4f}" if r["metric"] else "-"
        table.add_row(str(r["name"]), str(r["version"]), str(r["task"] or "-"), metric,
                      "-" if r["threshold"] is None else f"{r['threshold']}", str(r["parity"]))
    console.print(table)


def publish(
    path: Annotated[Path, typer.Argument(help="ONNX file to publish.")],
    name: Annotated[str, typer.Option("--name", help="Model name.")],
    card: Annotated[Path | None, typer.Option("--card", help="Model card JSON (missing fields come from the live version).")] = None,
    background: Annotated[Path | None, typer.Option("--background", help="SHAP background sample (.npy, [rows, features]).")] = None,
) -> None:
    """Validate an externally trained ONNX model and publish it as the next version (exit 2 if refused)."""
    s = get_settings()
    try:
        open_repository(s)
        data = path.read_bytes()
        got = intake.prepare(s.repository, name, data, card.read_text() if card else None,
                             background=background.read_bytes() if background else None)
        mc = got.card
        pub = do_publish(s.repository, Candidate(name=name, onnx_bytes=data, card=mc, labels=mc.labels,
                                                 label_output=got.label_output,
                                                 extra_files=got.extra_files),
                         max_batch_size=s.default_max_batch_size, instance_count=s.default_instance_count,
                         max_queue_delay_us=s.default_max_queue_delay_us, sandbox=SandboxLimits.from_settings(s))
    except (PublishError, RepositorySyncFailed) as exc:
        console.print(f"[red]refused[/red] ({exc.code}): {exc.message}")
        raise typer.Exit(2) from exc
    except (OSError, ValueError) as exc:
        console.print(f"[red]refused[/red]: {exc}")
        raise typer.Exit(2) from exc
    typer.echo(f"published {pub.name} version {pub.version} at {pub.path}")
    if got.inherited:
        typer.echo(f"inherited from version {got.inherited_from}: {', '.join(got.inherited)}")
    if got.background:
        typer.echo(f"background sample: {got.background}")


def _print_refusal(exc: MlstackError) -> None:
    console.print(f"  [red]refused[/red] ({exc.code}): {exc.message}")
    for row in exc.details.get("rows", []):
        console.print(f"    row {row['row']} output {row['output']}: "
                      + (f"max abs diff {row['max_abs_diff']:.3g}" if "max_abs_diff" in row
                         else f"native {row['native']} vs onnx {row['onnx']}"))


def train(
    names: Annotated[list[str] | None, typer.Argument(help="Recipes to train (see --list).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Train every demo recipe.")] = False,
    if_empty: Annotated[bool, typer.Option("--if-empty", help="Do nothing if the repository already holds models.")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List the recipes and exit.")] = False,
) -> None:
    """Train recipes and publish each as a new version (held-out metric, ONNX export, parity check, atomic publish)."""
    from training.pipeline import train_and_publish
    from training.registry import RECIPES

    if list_:
        typer.echo("\n".join(RECIPES))
        return
    s = get_settings()
    open_repository(s)
    if if_empty and model_names(s.repository):
        typer.echo(f"{s.repository} already holds models; not training (run `mlstack train --all` to add versions)")
        return
    todo = list(RECIPES) if all_ else list(names or [])
    if not todo:
        console.print("[red]nothing to train[/red]: name recipes or pass --all; known: " + ", ".join(RECIPES))
        raise typer.Exit(2)
    unknown = [n for n in todo if n not in RECIPES]
    if unknown:
        console.print(f"[red]unknown recipe(s)[/red] {', '.join(unknown)}; known: {', '.join(RECIPES)}")
        raise typer.Exit(2)
    failed: list[str] = []
    start = time.monotonic()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task("training", total=len(todo))
        for name in todo:
            progress.update(bar, description=f"training {name}")
            t0 = time.monotonic()
            try:
                pub = train_and_publish(name, s.repository, s, report=lambda line: console.print(f"  {line}"))
            except MlstackError as exc:
                failed.append(name)
                _print_refusal(exc)
            else:
                hm = pub.card.headline_metric
                metric = f"{hm.name} {hm.value:.4f}" if hm else ""
                console.print(f"[green]✓[/green] {name} v{pub.version} {metric} ({time.monotonic() - t0:.1f}s)")
            progress.advance(bar)
    console.print(f"trained {len(todo) - len(failed)}/{len(todo)} in {time.monotonic() - start:.1f}s")
    if failed:
        console.print(f"[red]not published[/red]: {', '.join(failed)}")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(models)
    app.command()(publish)
