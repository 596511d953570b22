"""Locust: the baseline server (``loadtests/baseline.py``) under exactly the ``triton_rest`` request."""

from __future__ import annotations

from loadtests.triton_rest import TritonRestUser


class BaselineUser(TritonRestUser):
    """The same single-row v2 request as ``TritonRestUser``, against the one-process FastAPI + onnxruntime server."""


if __name__ == "__main__":
    from locust import run_single_user

    BaselineUser.host = "http://127.0.0.1:8090"
    run_single_user(BaselineUser)
