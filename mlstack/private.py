"""Private runtime files: ``var_dir`` is 0700 and secrets/databases in it 0600, tightened when found looser."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path | str) -> Path:
    """Create ``path`` (and missing parents) 0700; an existing directory open to group/others is tightened."""
    p = Path(path)
    # mkdir's mode is filtered by the umask, which can only remove bits: 0700 stays 0700 or tighter.
    p.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(p, DIR_MODE)
    return p


def private_file(path: Path | str) -> Path:
    """Make sure ``path`` exists and is 0600 (created with that mode, never readable by others in between)."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        os.close(fd)
    except FileExistsError:
        pass
    _tighten(p, FILE_MODE)
    return p


def _tighten(p: Path, mode: int) -> None:
    current = stat.S_IMODE(p.stat().st_mode)
    if current & 0o077:
        try:
            os.chmod(p, current & mode)
            logger.warning("%s was accessible to other users (mode %o); restricted it to %o", p, current, current & mode)
        except PermissionError:  # not ours (e.g. a shared mount): say so, but do not refuse to start
            logger.warning("%s is accessible to other users (mode %o) and could not be restricted", p, current)
