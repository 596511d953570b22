"""``python -m auth_api``: serve the gateway (HTTP on gateway_http_port, gRPC on gateway_grpc_port) from MLSTACK_* env.

``gateway_workers`` > 1 runs that many processes on the same ports (auth_api/serve.py).
"""

from __future__ import annotations

import sys

from auth_api.serve import serve

if __name__ == "__main__":
    sys.exit(serve())
