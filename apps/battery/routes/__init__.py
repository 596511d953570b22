"""The app's routers under one ``router`` (mounted at ``/api/v1`` by auth_api.main, the composition root)."""

from __future__ import annotations

from fastapi import APIRouter

from apps.battery.routes import analyses, batteries, data, thermal, twin

router = APIRouter()
for _r in (batteries, data, analyses, twin, thermal):
    router.include_router(_r.router)
