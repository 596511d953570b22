"""Path and query parameters shared by the routes, bounded at the edge so no value can overflow a database column."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

MAX_INT64 = 2**63 - 1
# Id columns are INTEGER (migration 0001): 32-bit on PostgreSQL, so a larger id cannot exist there (and would be a
# DataError, as beyond 64 bits it is an OverflowError on SQLite). Keep in step with the column type.
MAX_ID = 2**31 - 1

Id = Annotated[int, Path(ge=1, le=MAX_ID, description="A database id (1 .. 2^31-1).")]
Offset = Annotated[int, Query(ge=0, le=MAX_INT64)]
