"""Keeps the gateway's mirror of an s3:// model repository current (cards, labels, versions another host published)."""

from __future__ import annotations

import logging
import threading

from mlstack.repository import remote
from mlstack.settings import Settings

logger = logging.getLogger(__name__)


class RepositorySync:
    """A daemon thread that runs ``remote.sync`` every ``repository_sync_interval_s``; nothing for a local repository."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0

    def start(self, loop: bool = True) -> None:
        """Attach the mirror (every process that may publish needs the credentials) and, with ``loop``, keep it synced."""
        if not self.settings.repository_remote:
            return
        remote.open_repository(self.settings)
        if not loop:
            return
        self._thread = threading.Thread(target=self._run, name="repository-sync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.repository_sync_interval_s):
            try:
                changed = remote.sync(self.settings.repository)
            except Exception as exc:  # S3 down: the mirror keeps what it has; the next pass tries again
                self.failures += 1
                logger.warning("repository sync with %s failed: %s", self.settings.repository_remote, exc)
                continue
            if changed:
                logger.info("repository mirror updated: %s", ", ".join(changed))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
