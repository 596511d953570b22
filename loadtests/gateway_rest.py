"""Locust: through the gateway — log in once per user, then v2 infer and ``/api/v1/predict`` mixed 3:1, every response checked.

Credentials come from ``MLSTACK_BENCH_USERNAME`` / ``MLSTACK_BENCH_PASSWORD`` (`mlstack bench gateway` creates the user);
``MLSTACK_BENCH_TOKEN`` skips the login (the bench's direct-vs-gateway leg).
"""

from __future__ import annotations

import json
import os

from locust import FastHttpUser, constant, task

from loadtests.common import MODEL, predict_problem, random_row, v2_body, v2_problem


class _SignedIn(FastHttpUser):
    """A signed-in client of the gateway (JWT in ``Authorization``); the subclasses choose the task mix.

    Locust always inherits a base class's tasks, so the requests live here as plain methods and only the
    concrete users below declare ``@task``s.
    """

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        token = os.environ.get("MLSTACK_BENCH_TOKEN")
        if token:  # a pre-issued token (the bench's like-for-like leg): no login traffic in the measured window
            self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            return
        creds = {"username": os.environ.get("MLSTACK_BENCH_USERNAME", "bench"), "password": os.environ.get("MLSTACK_BENCH_PASSWORD", "")}
        with self.client.post("/api/v1/auth/login", json=creds, name="login", catch_response=True) as resp:
            if resp.status_code != 200 or "access_token" not in (resp.json() or {}):
                resp.failure(f"login failed: HTTP {resp.status_code} {resp.text[:200] if resp.text else ''}")
                self.headers = {"Content-Type": "application/json"}
                return
            self.headers = {"Authorization": f"Bearer {resp.json()['access_token']}", "Content-Type": "application/json"}

    def v2_infer(self) -> None:
        with self.client.post(f"/v2/models/{MODEL}/infer", data=v2_body(random_row()), headers=self.headers,
                              name="v2 infer", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200] if resp.text else ''}")
                return
            problem = v2_problem(resp.json())
            if problem:
                resp.failure(problem)

    def predict(self) -> None:
        body = json.dumps({"instances": [random_row()]})
        with self.client.post(f"/api/v1/predict/{MODEL}", data=body, headers=self.headers, name="api predict",
                              catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200] if resp.text else ''}")
                return
            problem = predict_problem(resp.json())
            if problem:
                resp.failure(problem)


class GatewayUser(_SignedIn):
    """v2 infer and ``/api/v1/predict`` mixed 3:1."""

    @task(3)
    def v2_task(self) -> None:
        self.v2_infer()

    @task(1)
    def predict_task(self) -> None:
        self.predict()


class GatewayV2User(_SignedIn):
    """v2 infer only: the same request as ``triton_rest``, for the direct-vs-gateway comparison."""

    @task
    def v2_task(self) -> None:
        self.v2_infer()


if __name__ == "__main__":
    from locust import run_single_user

    GatewayUser.host = "http://127.0.0.1:8080"
    run_single_user(GatewayUser)
