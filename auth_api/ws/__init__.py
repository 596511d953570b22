"""Real-time predictions over a WebSocket (``/api/v1/ws``): auth, commands, per-connection backpressure, history."""
