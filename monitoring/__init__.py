"""Monitoring: Prometheus config and alert rules, Grafana dashboards, and a local Prometheus launcher."""
