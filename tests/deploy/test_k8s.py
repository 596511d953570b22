"""deploy/k8s without a cluster: both overlays render with kustomize (`kubectl kustomize`, offline), every manifest
validates against the Kubernetes schemas (kubernetes-validate), CRDs' required fields are checked here, and the
manifests agree with the launcher, the settings and monitoring/."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mlstack.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # native sidecars (initContainers with restartPolicy: Always) need >= 1.29
DEFAULTS = Settings.model_construct()
Doc = dict[str, Any]


def _render(overlay: str) -> list[Doc]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found (its built-in kustomize renders deploy/k8s): apt-get install -y kubectl "
                    "(Google Cloud's apt repository) or put a standalone `kubectl` on PATH", pytrace=False)
    proc = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {overlay: _render(overlay) for overlay in ("cpu", "gpu")}


def _one(docs: list[Doc], kind: str, name: str) -> Doc:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _container(docs: list[Doc], name: str) -> Doc:
    return _one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def _flags(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in args if a.startswith("--") and "=" in a)


# Required fields of the CRDs we use, from KEDA 2.16's and prometheus-operator 0.77's CRD schemas (no schema for
# them ships with kubernetes-validate), plus the fields we set, so a typo fails here rather than in the cluster.
CRD_FIELDS: dict[str, tuple[set[str], set[str]]] = {  # kind -> (required spec fields, allowed spec fields)
    "ScaledObject": ({"scaleTargetRef", "triggers"},
                     {"scaleTargetRef", "triggers", "minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod",
                      "advanced", "fallback", "idleReplicaCount", "initialCooldownPeriod"}),
    "ServiceMonitor": ({"selector"}, {"selector", "endpoints", "jobLabel", "namespaceSelector", "targetLabels", "podTargetLabels",
                                      "sampleLimit", "attachMetadata"}),
}
CRD_API = {"ScaledObject": "keda.sh/v1alpha1", "ServiceMonitor": "monitoring.coreos.com/v1"}


def _check_crd(doc: Doc) -> None:
    kind = doc["kind"]
    assert doc["apiVersion"] == CRD_API[kind], doc["apiVersion"]
    required, allowed = CRD_FIELDS[kind]
    spec = doc["spec"]
    assert required <= set(spec) and set(spec) <= allowed, (kind, sorted(spec))
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    if kind == "ScaledObject":
        assert spec["scaleTargetRef"]["name"]
        for trigger in spec["triggers"]:
            assert {"type", "metadata"} <= set(trigger) and trigger.get("metricType", "AverageValue") in ("AverageValue", "Value",
                                                                                                       "Utilization")
            meta = trigger["metadata"]
            assert trigger["type"] == "prometheus" and {"serverAddress", "query", "threshold"} <= set(meta)
            assert all(isinstance(v, str) for v in meta.values()) and float(meta["threshold"]) > 0  # KEDA: string map
    else:
        for ep in spec["endpoints"]:
            assert set(ep) <= {"port", "path", "interval", "scheme", "authorization", "scrapeTimeout", "relabelings"}, ep
            if "authorization" in ep:
                assert ep["authorization"]["type"] == "Bearer" and {"name", "key"} == set(ep["authorization"]["credentials"])


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_every_manifest_validates(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    kinds = sorted(d["kind"] for d in docs)
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "ScaledObject", "ServiceMonitor", "ConfigMap"):
        assert kind in kinds, f"{overlay}: no {kind}"
    for doc in docs:
        if doc["kind"] in CRD_FIELDS:
            _check_crd(doc)
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']} at {list(exc.path)}: {exc.message}", pytrace=False)
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "mlstack"
    # the validator is not a no-op: a typo'd field is refused in strict mode
    broken = copy.deepcopy(_one(docs, "Deployment", "gateway"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/", "port": 80}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_triton_flags_match_the_launcher_and_overlays_differ_only_in_hardware(rendered: dict[str, list[Doc]]) -> None:
    from services.triton.launcher import TritonServer

    try:
        local = _flags(TritonServer(DEFAULTS).command())
    except Exception as exc:  # the binary is located to build argv; say so instead of a bare traceback
        pytest.fail(f"cannot derive the launcher's tritonserver flags: {exc}", pytrace=False)
    for overlay, docs in rendered.items():
        triton = _container(docs, "triton")
        assert triton["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
        k8s = _flags(triton["args"])
        for flag in ("http-port", "grpc-port", "metrics-port", "repository-poll-secs", "strict-readiness", "exit-on-error",
                     "exit-timeout-secs", "allow-metrics"):
            assert k8s.get(flag) == local.get(flag), f"{overlay}: --{flag} is {k8s.get(flag)!r}, the launcher uses {local.get(flag)!r}"
        assert k8s["model-control-mode"] == "poll"
        assert k8s["model-repository"] == "$(MLSTACK_REPOSITORY)"  # expanded by the kubelet from the ConfigMap
        assert _one(docs, "ConfigMap", "mlstack-config")["data"]["MLSTACK_REPOSITORY"].startswith("s3://")
        assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
        assert ports == {"http": DEFAULTS.triton_http_port, "grpc": DEFAULTS.triton_grpc_port, "metrics": DEFAULTS.triton_metrics_port}
        gpus = triton["resources"]["limits"].get("nvidia.com/gpu")
        assert (gpus == "1") == (overlay == "gpu") and (k8s.get("model-config-name") == "gpu") == (overlay == "gpu")
    strip = {"gpu": None, "cpu": None}
    for overlay, docs in rendered.items():  # apart from Triton's Deployment both overlays render the same objects
        strip[overlay] = [d for d in docs if not (d["kind"] == "Deployment" and d["metadata"]["name"] == "triton")]
    assert strip["cpu"] == strip["gpu"]


def test_gateway_replicas_state_and_disruption_budget(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["cpu"]
    dep = _one(docs, "Deployment", "gateway")
    assert dep["spec"]["replicas"] >= 2
    pod = dep["spec"]["template"]["spec"]
    gw = pod["containers"][0]
    assert gw["command"] == ["python", "-m", "auth_api"]
    env = {e["name"]: e for e in gw["env"]}
    for name, key in (("MLSTACK_DATABASE_URL", "database-url"), ("MLSTACK_JWT_SECRET", "jwt-secret"),
                      ("MLSTACK_ADMIN_PASSWORD", "admin-password")):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "mlstack-secrets", "key": key}, name
    config = _one(docs, "ConfigMap", "mlstack-config")["data"]
    assert config["MLSTACK_REDIS_URL"] == "redis://redis:6379/0" and _one(docs, "Service", "redis")
    assert {"configMapRef": {"name": "mlstack-config"}} in gw["envFrom"]
    (ingester,) = pod["initContainers"]
    assert ingester["restartPolicy"] == "Always" and ingester["command"] == ["python", "-m", "auth_api.ingester"]
    assert env["MLSTACK_GATEWAY_INGESTER"]["value"] == "external"
    assert {m["mountPath"] for m in ingester["volumeMounts"]} == {m["mountPath"] for m in gw["volumeMounts"]} == {config["MLSTACK_VAR_DIR"]}
    pdb = _one(docs, "PodDisruptionBudget", "gateway")
    assert pdb["spec"]["minAvailable"] == 1 and pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert gw["readinessProbe"]["httpGet"]["path"] == "/health/ready" and gw["livenessProbe"]["httpGet"]["path"] == "/health/live"
    # every MLSTACK_* variable is a real setting, every port its default
    fields = set(Settings.model_fields)
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        spec = d["spec"]["template"]["spec"]
        for c in spec["containers"] + spec.get("initContainers", []):
            names = {e["name"]: e.get("value") for e in c.get("env", [])}
            names |= config if any("configMapRef" in s for s in c.get("envFrom", [])) else {}
            for key, value in names.items():
                if key.startswith("MLSTACK_"):
                    field = key.removeprefix("MLSTACK_").lower()
                    assert field in fields, f"{d['metadata']['name']}: {key} is not a Settings field"
                    if key.endswith("_PORT") and value is not None:
                        assert int(value) == getattr(DEFAULTS, field), f"{key}={value}"
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version and gw["image"] == ingester["image"] == _container(docs, "bento")["image"] == f"mlstack:{version.group(1)}"
    from services.bento.launcher import SERVICE

    assert SERVICE in _container(docs, "bento")["command"]


def test_services_select_pods_and_only_gateway_and_bento_reach_triton(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["cpu"]
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in docs if d["kind"] == "Deployment"}
    for svc in (d for d in docs if d["kind"] == "Service"):
        name = svc["metadata"]["name"]
        template = pods[name]
        assert svc["spec"]["selector"].items() <= template["metadata"]["labels"].items(), name
        named = {p["name"] for c in template["spec"]["containers"] + template["spec"].get("initContainers", []) for p in c["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= named, name
    policy = _one(docs, "NetworkPolicy", "triton-callers")["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "triton"} and policy["policyTypes"] == ["Ingress"]
    serving, metrics = policy["ingress"]
    assert sorted(p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in serving["from"]) == ["bento", "gateway"]
    assert sorted(p["port"] for p in serving["ports"]) == [DEFAULTS.triton_http_port, DEFAULTS.triton_grpc_port]
    assert [p["port"] for p in metrics["ports"]] == [DEFAULTS.triton_metrics_port] and "podSelector" not in metrics["from"][0]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    jobs = {t["job_name"] for t in yaml.safe_load((ROOT / "monitoring/prometheus/prometheus.yml").read_text())["scrape_configs"]}
    for sm in (d for d in docs if d["kind"] == "ServiceMonitor"):
        (svc,) = [s for s in services.values() if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}
        assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]] in jobs  # job names the dashboards and alerts query
    scaled = _one(docs, "ScaledObject", "triton")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "triton" and scaled["minReplicaCount"] >= 1
    queries = " ".join(t["metadata"]["query"] for t in scaled["triggers"])
    assert "nv_inference_queue_duration_us" in queries and "nv_inference_pending_request_count" in queries


def test_dashboards_configmap_is_monitoring_s_files(rendered: dict[str, list[Doc]]) -> None:
    cm = _one(rendered["cpu"], "ConfigMap", "mlstack-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = {p.name: p.read_text() for p in (ROOT / "monitoring/grafana/dashboards").glob("*.json")}
    assert cm["data"] == files
