"""The battery-fleet application: batteries, telemetry, analyses (Triton + BentoML explain), digital twin, thermal images.

Mounted by ``auth_api.main`` (the composition root) via ``apps.battery.routes.router``; docs in docs/battery_fleet.md.
"""
