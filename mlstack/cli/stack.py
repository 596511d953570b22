"""Stack commands: ``up``, ``down``, ``status``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mlstack import stack
from mlstack import status as tier_status
from mlstack.settings import get_settings

console = Console()
TIERS = ["triton", "bento", "gateway"]


def up(
    with_prometheus: Annotated[bool, typer.Option("--with-prometheus", help="Also start a local Prometheus.")] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help=f"Start only these tiers ({', '.join(TIERS)}).")] = None,
    tritons: Annotated[int, typer.Option("--tritons", min=1, help="Triton replicas (the gateways balance over them).")] = 1,
    gateways: Annotated[int, typer.Option(
        "--gateways", min=1,
        help="Gateway replicas on consecutive HTTP ports from MLSTACK_GATEWAY_HTTP_PORT (needs MLSTACK_REDIS_URL).")] = 1,
) -> None:
    """Start the embedded stack (Triton, BentoML, gateway on SQLite) in the foreground under one supervisor that restarts
    a tier that dies; Ctrl+C stops every child."""
    names = list(only) if only else list(TIERS)
    unknown = [n for n in names if n not in TIERS]
    if unknown:
        console.print(f"[red]unknown tier(s)[/red] {', '.join(unknown)}; known: {', '.join(TIERS)}")
        raise typer.Exit(2)
    if with_prometheus:
        names.append("prometheus")
    code = stack.up(get_settings(), names, report=lambda line: console.print(line), tritons=tritons, gateways=gateways)
    raise typer.Exit(code)


def down() -> None:
    """Stop a running `mlstack up` (and with it every child it started)."""
    s = get_settings()
    if stack.down(s):
        console.print("stack stopped")
        return
    from services.triton.launcher import stop_from_pidfile

    if stop_from_pidfile(s):
        console.print("stopped a tritonserver left from an earlier run")
        return
    console.print("nothing is running")


def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Each component's own state (ready / not ready / not responding / down) and URL; exit 1 unless Triton and the
    gateway are ready."""
    rows = tier_status.status(get_settings())
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        table = Table("component", "state", "url", "detail")
        for r in rows:
            detail = r["detail"] + (f"; models: {', '.join(r['models'])}" if r.get("models") else "")
            table.add_row(r["component"], f"[green]{r['state']}[/green]" if r["healthy"] else f"[red]{r['state']}[/red]", r["url"],
                          detail)
        console.print(table)
    if not all(r["healthy"] for r in rows if r["component"] in ("triton", "gateway")):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(status)
