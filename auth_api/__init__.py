"""The auth/history gateway: authentication, rate limits, history, dashboards, model registry and inference proxy."""
