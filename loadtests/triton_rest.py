"""Locust: single-row KServe v2 JSON infer straight at Triton's HTTP port (``--host http://127.0.0.1:8000``)."""

from __future__ import annotations

from locust import FastHttpUser, constant, task

from loadtests.common import MODEL, random_row, v2_body, v2_problem


class TritonRestUser(FastHttpUser):
    """One closed-loop client: send, validate, repeat (no think time, so users = concurrency)."""

    wait_time = constant(0)
    path = f"/v2/models/{MODEL}/infer"

    @task
    def infer(self) -> None:
        with self.client.post(self.path, data=v2_body(random_row()), headers={"Content-Type": "application/json"},
                              name="v2 infer", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200] if resp.text else ''}")
                return
            problem = v2_problem(resp.json())
            if problem:
                resp.failure(problem)


if __name__ == "__main__":
    from locust import run_single_user

    TritonRestUser.host = "http://127.0.0.1:8000"
    run_single_user(TritonRestUser)
