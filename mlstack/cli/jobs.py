"""``mlstack jobs``: submit a training job (uploading the file first), list jobs, show a job's log, cancel one.

Talks to the gateway over HTTP with a login token (``--token`` / ``MLSTACK_TOKEN``) or an API key with the
``models`` scope (``--api-key`` / ``MLSTACK_API_KEY``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from mlstack.settings import get_settings

jobs_app = typer.Typer(help="Training jobs on the gateway (datasets in, models out, on Ray).", no_args_is_help=True)
ALIASES = {"rf": "random_forest"}

UrlOpt = Annotated[str | None, typer.Option("--url", envvar="MLSTACK_GATEWAY_URL", help="Gateway base URL.")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="MLSTACK_TOKEN", help="Login access token.")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="MLSTACK_API_KEY", help="API key (scope 'models').")]


def _client(url: str | None, token: str | None, api_key: str | None) -> httpx.Client:
    s = get_settings()
    base = url or f"http://{s.gateway_host}:{s.gateway_http_port}"
    headers = {"Authorization": f"Bearer {token}"} if token else {"X-API-Key": api_key} if api_key else {}
    if not headers:
        raise typer.BadParameter("pass --token or --api-key (or set MLSTACK_TOKEN / MLSTACK_API_KEY)")
    return httpx.Client(base_url=base, headers=headers, timeout=60)


def _ok(r: httpx.Response) -> Any:
    if r.status_code >= 400:
        try:
            err = r.json()["error"]
            typer.echo(f"error {r.status_code} {err['code']}: {err['message']}", err=True)
        except (ValueError, KeyError, TypeError):
            typer.echo(f"error {r.status_code}: {r.text[:300]}", err=True)
        raise typer.Exit(1)
    return r.json()


def _line(job: dict[str, Any]) -> str:
    where = f" -> {job['model']} v{job['version']}" if job.get("version") else ""
    why = f" ({job['error_code']}: {job['error']})" if job.get("error") else ""
    return f"{job['id']}  {job['state']:<9} {job['stage']:<9} {job['progress'] * 100:5.1f}%{where}{why}"


def follow(c: httpx.Client, job_id: str) -> dict[str, Any]:
    """Print progress from the job's event stream until it ends; the final job."""
    last: str | None = None
    with c.stream("GET", f"/api/v1/jobs/{job_id}/events", timeout=None) as r:
        event = None
        for raw in r.iter_lines():
            if raw.startswith("event: "):
                event = raw[7:]
            elif raw.startswith("data: ") and event == "progress":
                job = json.loads(raw[6:])
                tail: list[str] = job["log_tail"]
                new = tail[len(tail) - tail[::-1].index(last):] if last in tail else tail
                for ln in new:
                    typer.echo(f"  [{job['stage']} {job['progress'] * 100:.0f}%] {ln}")
                last = tail[-1] if tail else last
            elif raw.startswith("data: ") and event == "end":
                break
    return dict(_ok(c.get(f"/api/v1/jobs/{job_id}")))


@jobs_app.command("submit")
def submit(
    file: Annotated[str, typer.Argument(help="CSV/TXT/XLSX/ZIP to upload, or a dataset id (sample-iris, or an uploaded id).")],
    algorithm: Annotated[str, typer.Option("--algorithm", "-a", help="svm | knn | rf (random_forest) | linear | logistic | mlp | cnn")],
    target: Annotated[str | None, typer.Option("--target", "-t", help="Column to predict (tables).")] = None,
    task: Annotated[str, typer.Option("--task", help="classification | regression")] = "classification",
    name: Annotated[str | None, typer.Option("--name", help="Model name (served as u<your id>-<name>).")] = None,
    params: Annotated[str | None, typer.Option("--params", help='JSON, e.g. \'{"n_estimators": 200}\'')] = None,
    search: Annotated[str | None, typer.Option("--search", help='JSON grid, e.g. \'{"max_depth": [3, 5, null]}\'')] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job's progress until it ends.")] = False,
    url: UrlOpt = None, token: TokenOpt = None, api_key: KeyOpt = None,
) -> None:
    """Upload FILE (unless it is a dataset id) and queue a job on it."""
    with _client(url, token, api_key) as c:
        path = Path(file)
        if path.is_file():
            with path.open("rb") as fh:
                ds = _ok(c.post("/api/v1/datasets", files={"file": (path.name, fh)}))
            dataset_id = str(ds["id"])
            typer.echo(f"uploaded {path.name}: dataset {dataset_id}")
        else:
            dataset_id = file
        algo = ALIASES.get(algorithm, algorithm)
        stem = re.sub(r"[^a-z0-9]+", "-", (path.stem if path.is_file() else file).lower()).strip("-")[:32] or "model"
        body = {"dataset_id": dataset_id, "target": target, "task": task, "algorithm": algo,
                "name": name or f"{stem}-{algo.replace('_', '-')}",
                "params": json.loads(params) if params else {}, "search": json.loads(search) if search else None}
        job = _ok(c.post("/api/v1/jobs", json=body))
        typer.echo(f"job {job['id']} {job['state']}: {body['algorithm']} on {dataset_id} -> {job['model']}")
        if wait:
            job = follow(c, job["id"])
            typer.echo(_line(job))
            if job["state"] != "succeeded":
                raise typer.Exit(1)


@jobs_app.command("list")
def list_jobs(all_users: Annotated[bool, typer.Option("--all", help="Everyone's jobs (admins).")] = False,
              url: UrlOpt = None, token: TokenOpt = None, api_key: KeyOpt = None) -> None:
    """Your jobs, newest first."""
    with _client(url, token, api_key) as c:
        for job in _ok(c.get("/api/v1/jobs", params={"all_users": all_users})):
            typer.echo(_line(job))


@jobs_app.command("logs")
def logs(job_id: str, follow_: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until it ends.")] = False,
         url: UrlOpt = None, token: TokenOpt = None, api_key: KeyOpt = None) -> None:
    """A job's log (the newest 1000 lines)."""
    with _client(url, token, api_key) as c:
        job = _ok(c.get(f"/api/v1/jobs/{job_id}", params={"log_lines": 1000}))
        for ln in job["log_tail"]:
            typer.echo(ln)
        if follow_ and job["state"] in ("queued", "running"):
            job = follow(c, job_id)
        typer.echo(_line(job))


@jobs_app.command("cancel")
def cancel(job_id: str, url: UrlOpt = None, token: TokenOpt = None, api_key: KeyOpt = None) -> None:
    """Stop a queued or running job."""
    with _client(url, token, api_key) as c:
        typer.echo(_line(_ok(c.post(f"/api/v1/jobs/{job_id}/cancel"))))


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")


