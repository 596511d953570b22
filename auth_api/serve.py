"""N gateway processes on one HTTP port (and one gRPC port), each its own listening socket with SO_REUSEPORT.

SO_REUSEPORT rather than uvicorn's workers (one inherited socket): the kernel hashes each new connection to one of the
listening sockets, so 64 keep-alive connections split evenly, where a shared accept queue let the busiest worker win
them (measured in docs/benchmarks.md). gRPC does the same: grpc-core sets SO_REUSEPORT on its port, so every worker
serves gRPC on the one port too.

The supervisor (``python -m auth_api`` with ``gateway_workers`` > 1) starts worker 0 alone (it migrates the schema and
creates the admin), then the others; all of them start listening once every one has started. It restarts a worker
that dies and forwards SIGTERM/SIGINT. Each worker has its own journal; the ingesters embedded in the workers
(``gateway_ingester=embedded``) share the journal directory through its flock, so one works and another takes over if
that worker dies.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mlstack.settings import Settings, get_settings

logger = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005
FIRST_WORKER_TIMEOUT_S = 180.0
RESTART_BACKOFF_MAX_S = 5.0
PR_SET_PDEATHSIG = 1


def reuseport_socket(host: str, port: int, *, listen: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Accepted sockets inherit it; without it uvicorn on a pre-bound socket waits ~40 ms per response (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
    return sock


def ws_max_size(settings: Settings) -> int:
    """uvicorn's WebSocket message cap: twice the gateway's, so a message a little over the limit reaches the gateway
    and gets its JSON ``message_too_big`` before the 1009 close, while nothing larger than this is ever buffered (uvicorn's
    own default is 16 MiB whatever the setting says, which also capped a setting above it)."""
    return 2 * settings.gateway_ws_max_message_bytes


def run_single(settings: Settings) -> None:
    """One process on the configured ports (gateway_workers == 1, and each worker under the supervisor)."""
    import uvicorn
    import uvloop

    from auth_api import gc_tuning, workers
    from auth_api.http_protocol import CoalescingHttpToolsProtocol
    from auth_api.main import create_app

    # The embedded ingester's thread shares the GIL with the event loop; with the default 5 ms switch interval a batch
    # held the loop for whole slices (measured at 64 concurrent: p99 70–82 ms with 0.5 ms, 90–115 with 5).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    app = create_app(settings)
    info = workers.current()
    gc_tuning.configure()
    hooks: list[Callable[[], Awaitable[None]]] = []
    if info is not None:
        hooks.append(lambda: workers.started_together(info))
    hooks.append(_sync_hook(gc_tuning.freeze))  # last: what the hooks leave alive is start-up heap too
    config = uvicorn.Config(AfterStartup(app, hooks), host=settings.gateway_host, port=settings.gateway_http_port,
                            http=CoalescingHttpToolsProtocol, timeout_graceful_shutdown=10, **uvicorn_options(settings))
    server = uvicorn.Server(config)

    async def main() -> None:
        expo = await workers.serve_exposition(info, app.state.metrics.registry) if info is not None else None
        try:
            if info is None:
                await server.serve()
            else:
                # Bound, not listening: the event loop listens once the lifespan is done, so the kernel sends no
                # connection to a worker still starting (the supervisor waits for worker 0 to accept).
                sock = reuseport_socket(settings.gateway_host, settings.gateway_http_port, listen=False)
                await server.serve(sockets=[sock])
        finally:
            if expo is not None:
                expo.close()

    uvloop.run(main())


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What every gateway uvicorn runs with (``python -m auth_api`` and the tests' in-process gateway alike).

    ``interface="asgi3"`` because ``AfterStartup.__call__`` is a plain function returning the app's awaitable (uvicorn's
    detection would take it for ASGI 2). Proxy headers only from the configured proxies: uvicorn's default trusts
    X-Forwarded-For from 127.0.0.1, which let any local client choose its address, and its middleware was one more
    coroutine per request.
    """
    allow = settings.gateway_forwarded_allow_ips
    return {"interface": "asgi3", "log_level": "warning", "access_log": False, "ws_max_size": ws_max_size(settings),
            "proxy_headers": bool(allow), "forwarded_allow_ips": allow or None}


class AfterStartup:
    """``app`` whose lifespan startup completes only after ``hooks`` ran: every worker's startup done (so no worker
    serves alone at first: a client that connects as soon as the port answers meets all N), then the GC freeze.
    Other scopes go straight to ``app``: ``__call__`` returns its awaitable, so a request pays no extra frame."""

    def __init__(self, app: Any, hooks: list[Callable[[], Awaitable[None]]]):
        self.app, self.hooks = app, hooks

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        if scope["type"] != "lifespan":
            return self.app(scope, receive, send)  # type: ignore[no-any-return]
        return self._lifespan(scope, receive, send)

    async def _lifespan(self, scope: Any, receive: Any, send: Any) -> None:
        async def hooked_send(message: Any) -> None:
            if message["type"] == "lifespan.startup.complete":
                for hook in self.hooks:
                    await hook()
            await send(message)

        await self.app(scope, receive, hooked_send)


def _sync_hook(fn: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def hook() -> None:
        fn()

    return hook


class Supervisor:
    """Keeps ``count`` worker processes running until told to stop."""

    def __init__(self, settings: Settings, count: int):
        from auth_api import workers

        self.settings, self.count = settings, count
        self.directory = workers.socket_directory(settings.var_dir, os.getpid())
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}
        self.failures: dict[int, int] = {}
        self.stopping = False
        self._held: list[socket.socket] = []

    def _reserve_ports(self) -> dict[str, str]:
        # A bound, never listening SO_REUSEPORT socket: port 0 becomes a fixed port every worker can bind, and it stays
        # ours while a worker restarts; no connection is ever queued on it.
        ports = {}
        for field, port in (("HTTP", self.settings.gateway_http_port), ("GRPC", self.settings.gateway_grpc_port)):
            sock = reuseport_socket(self.settings.gateway_host, port, listen=False)
            self._held.append(sock)
            ports[f"MLSTACK_GATEWAY_{field}_PORT"] = str(sock.getsockname()[1])
        return ports

    def _env(self, index: int, ports: dict[str, str]) -> dict[str, str]:
        from auth_api import workers

        return {**os.environ, **ports, "MLSTACK_GATEWAY_WORKERS": "1", workers.ENV_INDEX: str(index),
                workers.ENV_COUNT: str(self.count), workers.ENV_DIR: str(self.directory)}

    def _spawn(self, index: int, ports: dict[str, str]) -> None:
        proc = subprocess.Popen([sys.executable, "-m", "auth_api"], env=self._env(index, ports), preexec_fn=_die_with_parent)
        self.procs[index], self.started[index] = proc, time.monotonic()
        logger.info("gateway worker %d started (pid %d)", index, proc.pid)

    def _wait_started(self, proc: subprocess.Popen[bytes]) -> bool:
        from auth_api import workers

        deadline = time.monotonic() + FIRST_WORKER_TIMEOUT_S
        while time.monotonic() < deadline and not self.stopping:
            if proc.poll() is not None:
                return False
            if workers.started_marker(self.directory, 0).exists():
                return True
            time.sleep(0.1)
        return False

    def run(self) -> int:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(mode=0o700, parents=True)  # the sockets answer metrics without a token: owner-only
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        ports = self._reserve_ports()
        self._spawn(0, ports)
        if not self._wait_started(self.procs[0]):  # it migrates the schema and creates the admin: before the others
            logger.error("gateway worker 0 did not start")
            self._stop_all()
            return 1
        for index in range(1, self.count):
            self._spawn(index, ports)
        logger.info("gateway: %d workers on %s:%s (gRPC %s)", self.count, self.settings.gateway_host,
                    ports["MLSTACK_GATEWAY_HTTP_PORT"], ports["MLSTACK_GATEWAY_GRPC_PORT"])
        while not self.stopping:
            for index, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None or self.stopping:
                    continue
                lived = time.monotonic() - self.started[index]
                self.failures[index] = 0 if lived > 30 else self.failures.get(index, 0) + 1
                delay = min(RESTART_BACKOFF_MAX_S, 0.1 * 2 ** self.failures[index]) if self.failures[index] > 1 else 0.0
                logger.error("gateway worker %d (pid %d) exited with %s; restarting in %.1f s", index, proc.pid, code, delay)
                time.sleep(delay)
                if not self.stopping:
                    self._spawn(index, ports)
            time.sleep(0.1)
        return self._stop_all()

    def _on_signal(self, *_: Any) -> None:
        self.stopping = True

    def _stop_all(self) -> int:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for sock in self._held:
            sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        logger.info("gateway workers stopped")
        return 0


def _die_with_parent() -> None:
    # A supervisor killed with -9 cannot stop its workers: the kernel does (SIGKILL, as if the whole gateway was killed).
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def serve(settings: Settings | None = None) -> int:
    """Run the gateway until SIGINT/SIGTERM: one process, or a supervisor of ``gateway_workers`` processes."""
    settings = settings or get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.gateway_workers > 1:
        return Supervisor(settings, settings.gateway_workers).run()
    run_single(settings)
    return 0

