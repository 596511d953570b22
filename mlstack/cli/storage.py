"""``mlstack storage``: retention of stored inputs (``gc``) and a look at the configured store (``usage``)."""

from __future__ import annotations

from typing import Annotated

import typer

from mlstack.settings import get_settings

storage_app = typer.Typer(help="Object storage of kept inputs (file under var/objects, or s3://).", no_args_is_help=True)


@storage_app.command("gc")
def gc_command(
    older_than: Annotated[str, typer.Option("--older-than", help="Drop kept inputs older than this (30d, 12h, 15m).")] = "30d",
    grace: Annotated[str, typer.Option("--grace", help="Never delete an object touched within this (stores in flight).")] = "1h",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; change nothing.")] = False,
) -> None:
    """Forget inputs past retention and delete the objects no history row needs any more."""
    # The schema and the tables belong to the gateway tier: imported here, at the top, never by mlstack's core.
    from auth_api.core import db
    from auth_api.storage_gc import gc, parse_duration
    from mlstack.storage import open_storage

    try:
        older_s, grace_s = parse_duration(older_than), parse_duration(grace)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    settings = get_settings()
    engine = db.make_engine(db.database_url(settings))
    db.upgrade(engine)
    storage = open_storage(settings)
    try:
        r = gc(engine, storage, older_than_s=older_s, grace_s=grace_s, dry_run=dry_run)
    finally:
        storage.close()
        engine.dispose()
    verb = "would delete" if dry_run else "deleted"
    typer.echo(f"{r.expired_inputs} inputs past retention, {r.orphaned_inputs} of deleted predictions; "
               f"{verb} {r.deleted_objects} objects ({r.deleted_bytes} bytes)" + (f"; {r.failed} failed" if r.failed else ""))
    if r.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(storage_app, name="storage")
