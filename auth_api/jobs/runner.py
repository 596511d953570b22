"""Sends jobs to Ray and watches them from threads (never the event loop); Ray is imported on the first job only.

Local by default (``ray.init`` sized to the machine, or ``ray_num_cpus``); ``MLSTACK_RAY_ADDRESS`` joins an existing
cluster. A job whose worker dies is failed with Ray's reason; on start, jobs of a gateway whose local Ray is gone are
failed at once, and a watchdog fails running jobs whose heartbeat went stale (a lost worker on a cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from auth_api.jobs import store
from mlstack.process import pid_alive
from mlstack.settings import Settings
from training.jobs.data import DataRef

logger = logging.getLogger(__name__)
WATCHDOG_S = 5.0


class JobRunner:
    def __init__(self, settings: Settings, engine: Engine, db_url: str, on_published: Callable[[str], None]) -> None:
        self.settings, self.engine, self.db_url, self.on_published = settings, engine, db_url, on_published
        self.ident = f"ray:{settings.ray_address}" if settings.ray_address else f"local:{os.getpid()}"
        self._refs: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._owns_ray = False  # this runner started a local Ray: it (and its workers) end with this process
        self._watchdog: asyncio.Task[None] | None = None
        self._remote: Any = None

    # --- Ray ---------------------------------------------------------------------------------------
    def _ray(self) -> Any:
        import ray

        with self._lock:
            if not ray.is_initialized():
                init_ray(self.settings.ray_address, self.settings.ray_num_cpus)
                self._owns_ray = not self.settings.ray_address
            if self._remote is None:
                from auth_api.jobs.worker import execute

                self._remote = ray.remote(num_cpus=1, max_retries=0)(execute)
        return ray

    def submit(self, job_id: str, spec: dict[str, Any], ref: DataRef, served: str, owner: str) -> None:
        """Queue the job on Ray from a thread; returns at once. Daemon threads: a stopping gateway never waits for a job."""
        threading.Thread(target=self._run, args=(job_id, spec, ref, served, owner), name=f"job-{job_id[:13]}",
                         daemon=True).start()

    def _run(self, job_id: str, spec: dict[str, Any], ref: DataRef, served: str, owner: str) -> None:
        s = self.settings
        try:
            ray = self._ray()
            publish_kwargs = {"max_batch_size": s.default_max_batch_size, "instance_count": s.default_instance_count,
                              "max_queue_delay_us": s.default_max_queue_delay_us,
                              "version_policy_latest": s.default_version_policy_latest}
            obj = self._remote.remote(job_id, spec, ref, self.db_url, str(s.repository), served, owner, publish_kwargs, True)
            with self._lock:
                self._refs[job_id] = obj
            out = ray.get(obj)
        except Exception as exc:
            reason = _reason(exc)
            if store.finish(self.engine, job_id, "failed", code="worker_lost", error=reason):
                logger.warning("job %s failed: %s", job_id, reason)
            return
        finally:
            with self._lock:
                self._refs.pop(job_id, None)
        if out.get("state") == "succeeded":
            self.on_published(str(out["model"]))

    def cancel(self, job_id: str) -> bool:
        """Mark cancelled (if still active) and stop its Ray task; False if the job had already finished."""
        if not store.finish(self.engine, job_id, "cancelled", error="cancelled by request"):
            return False
        with self._lock:
            ref = self._refs.get(job_id)
        if ref is not None:
            import ray

            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        return True

    # --- restarts and lost workers -----------------------------------------------------------------
    def reconcile(self) -> int:
        """Fail the active jobs nobody can finish any more: those of a local Ray whose gateway process is gone."""
        n = 0
        for job in store.active(self.engine):
            owner = job.runner or ""
            if owner.startswith("local:") and owner != self.ident and not pid_alive(int(owner.split(":")[1])):
                n += store.finish(self.engine, job.id, "failed", code="worker_lost",
                                  error="the gateway restarted; its local Ray instance (and this job's worker) went with it")
        return n

    def check_stale(self) -> int:
        limit = store.ago(self.settings.jobs_heartbeat_timeout_s)
        n = 0
        for job in store.stale(self.engine, limit):
            n += store.finish(self.engine, job.id, "failed", code="worker_lost",
                              error=f"no heartbeat from the worker for {self.settings.jobs_heartbeat_timeout_s:g} s")
        return n

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_S)
            try:
                await asyncio.to_thread(self.check_stale)
            except Exception as exc:
                logger.warning("job watchdog: %s", exc)

    def start(self) -> None:
        """Start the watchdog (after ``reconcile``, on the event loop)."""
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._owns_ray:  # the local Ray stops with this process: its jobs cannot finish, say so now
            for job in await asyncio.to_thread(store.active, self.engine):
                if job.runner == self.ident:
                    await asyncio.to_thread(store.finish, self.engine, job.id, "failed", code="worker_lost",
                                            error="the gateway stopped; its local Ray instance (and this job's worker) went with it")


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """``ray.init`` on a thread that lives as long as the process: Ray's local processes (GCS, raylet) die with the
    *thread* that started them (Linux parent-death signal), so a job's short-lived thread must not start them."""
    import ray

    started = threading.Event()
    failed: list[BaseException] = []

    def owner() -> None:
        try:
            logger.info("starting Ray (%s)", address or "local instance")
            ray.init(address=address or None, num_cpus=None if address else num_cpus, include_dashboard=False,
                     ignore_reinit_error=True, log_to_driver=False, logging_level=logging.WARNING)
        except BaseException as exc:
            failed.append(exc)
        finally:
            started.set()
        threading.Event().wait()  # never returns: this thread is the parent of the local Ray's processes

    threading.Thread(target=owner, name="ray-owner", daemon=True).start()
    started.wait()
    if failed:
        raise failed[0]


def _reason(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc).strip().splitlines()
    head = next((ln for ln in text if ln.strip()), "")[:300]
    if "Cancelled" in name:
        return "the job's Ray task was cancelled"
    if "WorkerCrashed" in name or "ActorDied" in name or "NodeDied" in name:
        return f"the job's worker died ({name}): {head}"
    return f"{name}: {head}"
