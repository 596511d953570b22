"""``mlstack cache NAME [--on | --off] [--ttl S | --default-ttl]``: a model's prediction-cache policy in the gateway."""

from __future__ import annotations

from typing import Annotated

import typer

from mlstack.errors import MlstackError
from mlstack.repository.caching import CachePolicy, read_policy, set_policy
from mlstack.repository.remote import open_repository
from mlstack.settings import Settings, get_settings


def _describe(name: str, policy: CachePolicy, s: Settings) -> str:
    on = s.gateway_prediction_cache if policy.enabled is None else policy.enabled
    ttl = policy.ttl_s or s.gateway_prediction_cache_ttl_s
    origin = "" if policy.enabled is not None else " (the gateway default, MLSTACK_GATEWAY_PREDICTION_CACHE)"
    ttl_origin = "" if policy.ttl_s is not None else " (the gateway default)"
    return f"{name}: prediction cache {'on' if on else 'off'}{origin}, ttl {ttl:g} s{ttl_origin}"


def cache(
    name: Annotated[str, typer.Argument(help="Model name.")],
    enabled: Annotated[bool | None, typer.Option("--on/--off", help="Cache the model's successful v2 answers, or not.")] = None,
    ttl: Annotated[float | None, typer.Option("--ttl", help="Lifetime of a cached answer (s).")] = None,
    default_ttl: Annotated[bool, typer.Option("--default-ttl", help="Drop the model's own TTL (the gateway's applies).")] = False,
) -> None:
    """Show or set a model's prediction-cache policy (written into its config.pbtxt; gateways apply it within 2 s).

    A polling Triton reloads the model when its config changes: the same version, loaded beside the serving copy and
    swapped in, so requests keep being answered."""
    s = get_settings()
    if ttl is not None and default_ttl:
        raise typer.BadParameter("--ttl and --default-ttl exclude each other")
    try:
        repo = open_repository(s)
        policy = read_policy(repo, name)
        if enabled is not None or ttl is not None or default_ttl:
            new_ttl = None if default_ttl else (ttl if ttl is not None else policy.ttl_s)
            policy, changed = set_policy(repo, name, policy.enabled if enabled is None else enabled, new_ttl)
            if not changed:
                typer.echo("unchanged")
    except MlstackError as exc:
        typer.echo(f"refused ({exc.code}): {exc.message}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(_describe(name, policy, s))


def register(app: typer.Typer) -> None:
    app.command()(cache)
