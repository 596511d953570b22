"""Alert rules on the real stack: predictions through a gateway in front of the session's Triton raise alerts (once per
cool-down), on the rule owner's predictions only, in-app, by mail (the .eml outbox) and by a signed webhook that is
retried after a 500; the alerts API, the metric, validation and the SSRF policy."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.fixtures.gateway import PASSWORD, RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture

pytestmark = pytest.mark.slow
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [7.7, 3.0, 6.1, 2.3]


class Receiver:
    """A loopback webhook receiver answering the statuses in ``plan`` (then 200) and keeping what it got."""

    def __init__(self, plan: list[int]) -> None:
        self.plan = list(plan)
        self.calls: list[tuple[int, dict[str, str], bytes]] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        box = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with box.lock:
                    status = box.plan.pop(0) if box.plan else 200
                    box.calls.append((status, {k.lower(): v for k, v in self.headers.items()}, body))
                    box.paths.append(self.path)
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout_s: float = 15.0) -> list[tuple[int, dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout_s
        while len(self.calls) < n:
            assert time.monotonic() < deadline, f"{len(self.calls)} of {n} webhook calls"
            time.sleep(0.05)
        return list(self.calls)


@pytest.fixture(scope="module")
def agw(triton: TritonFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A gateway over the session's Triton (SQLite: the DB-specific part is tested apart), webhooks to loopback allowed."""
    tmp = tmp_path_factory.mktemp("alerts")
    settings = gateway_settings(tmp, f"sqlite:///{tmp / 'gw.db'}", triton=triton, alert_webhook_allow_private=True,
                                alert_poll_interval_s=0.05, alert_webhook_retry_base_s=0.2, alert_webhook_retry_max_s=0.5,
                                mail_poll_interval_s=0.1, require_email_verification=False)
    with run_gateway(settings) as gw:
        yield gw


def _user(gw: RunningGateway, name: str) -> str:
    with gw.client(gw.admin_token()) as c:
        r = c.post("/api/v1/users", json={"username": name, "password": PASSWORD, "email": f"{name}@example.org"})
    assert r.status_code == 201, r.text
    return str(gw.login(name, PASSWORD)["access_token"])


def _predict(c: httpx.Client, row: list[float], n: int = 1) -> None:
    for _ in range(n):
        r = c.post("/v2/models/iris-logreg/infer", json={"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                                                      "data": row}]})
        assert r.status_code == 200, r.text


def _eml_to(gw: RunningGateway, address: str, timeout_s: float = 10.0) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = [m for p in sorted((gw.settings.var_dir / "outbox").glob("*.eml"))
                 if str((m := message_from_bytes(p.read_bytes(), policy=policy.default))["To"]) == address]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_rule_fires_once_per_cooldown_on_my_predictions_through_every_channel(agw: RunningGateway) -> None:
    alice, bob = _user(agw, "alice"), _user(agw, "bob")
    hook = Receiver([500, 302])
    rule = {"model": "iris-logreg", "condition": {"label_in": ["setosa"]}, "severity": "warning", "cooldown_s": 300,
            "channels": ["in_app", "email", "webhook"], "webhook_url": hook.url, "name": "setosa seen"}
    with agw.client(alice) as a, agw.client(bob) as b:
        r = a.post("/api/v1/alert-rules", json=rule)
        assert r.status_code == 201, r.text
        created = r.json()
        secret, rule_id = created["webhook_secret"], created["id"]
        assert secret and "webhook_secret" not in a.get(f"/api/v1/alert-rules/{rule_id}").json()
        _predict(b, SETOSA, 3)  # bob's predictions: not alice's rule's business
        _predict(a, VIRGINICA, 2)  # alice's, but no match
        assert a.get("/api/v1/alerts").json()["total"] == 0
        _predict(a, SETOSA, 4)  # a match, then three more inside the cool-down
        r = a.post("/api/v1/predict/iris-logreg", json={"instances": [SETOSA]})  # another path, same window
        assert r.status_code == 200, r.text
        page = a.get("/api/v1/alerts").json()
        assert page["total"] == 1 and page["unread"] == 1, page
        (alert,) = page["items"]
        assert alert["model"] == "iris-logreg" and alert["rule_id"] == rule_id and alert["rule_name"] == "setosa seen"
        assert alert["label"] == "setosa" and alert["severity"] == "warning" and alert["prediction_id"]
        assert b.get("/api/v1/alerts").json()["total"] == 0
        assert b.get(f"/api/v1/alerts/{alert['id']}").status_code == 404
        assert b.put(f"/api/v1/alerts/{alert['id']}/read").status_code == 404
        # the window reopens: cool-down 0 fires on every match
        bad = a.patch(f"/api/v1/alert-rules/{rule_id}", json={"severity": None})
        assert bad.status_code == 422 and "severity" in bad.text, bad.text
        assert a.patch(f"/api/v1/alert-rules/{rule_id}", json={"cooldown_s": 0, "channels": ["in_app"],
                                                               "webhook_url": None}).status_code == 200
        _predict(a, SETOSA, 2)
        assert a.get("/api/v1/alerts").json()["total"] == 3

    calls = hook.wait(3)  # a 500, a redirect (not followed: a failed attempt), then the retry that lands
    assert [c[0] for c in calls] == [500, 302, 200] and calls[0][2] == calls[2][2] and hook.paths == ["/hook"] * 3
    _, headers, body = calls[2]
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-mlstack-signature"] == expected and headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["event"] == "alert" and doc["alert"]["id"] == alert["id"] and doc["alert"]["rule_name"] == "setosa seen"
    time.sleep(0.5)
    assert len(hook.calls) == 3, "delivered once, not again"
    (mail,) = _eml_to(agw, "alice@example.org")
    assert "setosa seen" in str(mail["Subject"]) and "warning" in str(mail["Subject"])
    assert _eml_to(agw, "bob@example.org", timeout_s=0) == []


def test_read_unread_filters_manual_alerts_and_metric(agw: RunningGateway) -> None:
    carol, dave = _user(agw, "carol"), _user(agw, "dave")
    with agw.client(carol) as c, agw.client(dave) as d, agw.client(agw.admin_token()) as admin:
        ids = []
        for sev, asset in (("info", "pack-1"), ("critical", "pack-2"), ("critical", "pack-1")):
            r = c.post("/api/v1/alerts", json={"severity": sev, "title": f"{sev} on {asset}", "asset": asset})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        assert d.post("/api/v1/alerts", json={"title": "for carol", "user_id": 1}).status_code == 403
        me = c.get("/api/v1/auth/me").json()["id"]
        r = admin.post("/api/v1/alerts", json={"title": "from the admin", "user_id": me, "severity": "warning"})
        assert r.status_code == 201 and r.json()["user_id"] == me
        ids.append(r.json()["id"])
        assert c.get("/api/v1/alerts", params={"severity": "critical"}).json()["total"] == 2
        assert c.get("/api/v1/alerts", params={"asset": "pack-1"}).json()["total"] == 2
        assert c.get("/api/v1/alerts", params={"severity": "critical", "asset": "pack-1"}).json()["total"] == 1
        assert c.put(f"/api/v1/alerts/{ids[0]}/read").json()["read_at"] is not None
        unread = c.get("/api/v1/alerts", params={"unread": "true"}).json()
        assert unread["total"] == 3 and ids[0] not in [a["id"] for a in unread["items"]]
        assert d.put(f"/api/v1/alerts/{ids[1]}/read").status_code == 404
        assert d.get("/api/v1/alerts").json()["total"] == 0
        assert admin.get("/api/v1/alerts", params={"asset": "pack-2"}).json()["total"] >= 1, "admins see everyone's"
        assert c.post("/api/v1/alerts/read-all").json() == {"updated": 3}
        assert c.get("/api/v1/alerts", params={"unread": "true"}).json()["total"] == 0
        assert c.get("/api/v1/alerts", params={"unred": "true"}).status_code == 422
        assert c.put("/api/v1/alerts/999999/read").json()["error"]["code"] == "alert_not_found"
    time.sleep(1.1)  # the collector caches its counts for a second
    text = httpx.get(f"{agw.url}/metrics", timeout=30).text
    counts = {s: float(v) for s, v in
              (line.split('severity="')[1].split('"} ') for line in text.splitlines() if line.startswith("alerts_total{"))}
    assert counts["critical"] >= 2 and counts["info"] >= 1 and counts["warning"] >= 1, counts


@pytest.mark.parametrize(("patch", "field"), [
    ({"condition": {}}, "condition"),
    ({"condition": {"label_is": ["x"]}}, "label_is"),
    ({"condition": {"probability_gt": 1.5}}, "probability_gt"),
    ({"severity": "fatal"}, "severity"),
    ({"channels": ["sms"]}, "channels"),
    ({"cooldown_s": -1}, "cooldown_s"),
    ({"channels": ["webhook"]}, "webhook_url"),
    ({"webhook_url": "http://example.org/x"}, "channels"),
    ({"model": "no-such-model"}, "model"),
    ({"webhook_url": "file:///etc/passwd", "channels": ["webhook"]}, "webhook_url"),
    ({"webhook_url": "http://169.254.169.254/latest/meta-data/", "channels": ["webhook"]}, "webhook_url"),
    ({"webhook_url": "gopher://127.0.0.1:70/", "channels": ["webhook"]}, "webhook_url"),
])
def test_bad_rules_are_422_naming_the_field(agw: RunningGateway, patch: dict[str, Any], field: str) -> None:
    token = agw.tokens.get("erin") or agw.create_user("erin")
    body = {"model": "iris-logreg", "condition": {"label_in": ["setosa"]}, **patch}
    with agw.client(token) as c:
        r = c.post("/api/v1/alert-rules", json=body)
        assert r.status_code == 422, r.text
        assert field in json.dumps(r.json()["error"]), r.json()


def test_only_admins_scope_all_and_builtin_rules_are_kept_by_code(agw: RunningGateway) -> None:
    token = agw.tokens.get("erin") or agw.create_user("erin")
    body = {"model": "iris-logreg", "condition": {"label_in": ["setosa"]}, "scope": "all"}
    with agw.client(token) as c, agw.client(agw.admin_token()) as admin:
        assert c.post("/api/v1/alert-rules", json=body).status_code == 403
        r = admin.post("/api/v1/alert-rules", json=body)
        assert r.status_code == 201 and r.json()["scope"] == "all"
        assert c.get(f"/api/v1/alert-rules/{r.json()['id']}").status_code == 404
        assert admin.delete(f"/api/v1/alert-rules/{r.json()['id']}").status_code == 204
